from wmtp.cli import main

main()
