"""The problem templates: 35 templates in 5 families, each family a YAML file of texts (`<family>.yaml`) and a
module of draw functions (`<family>.py`), joined by `wmtp.data.synthetic.spec.family`."""

from __future__ import annotations

from wmtp.data.synthetic.spec import Template
from wmtp.data.synthetic.templates.arithmetic import TEMPLATES as ARITHMETIC
from wmtp.data.synthetic.templates.conditionals import TEMPLATES as CONDITIONALS
from wmtp.data.synthetic.templates.lists import TEMPLATES as LISTS
from wmtp.data.synthetic.templates.loops import TEMPLATES as LOOPS
from wmtp.data.synthetic.templates.strings import TEMPLATES as STRINGS

FAMILIES = ("arithmetic", "strings", "lists", "conditionals", "loops")

TEMPLATES: tuple[Template, ...] = ARITHMETIC + STRINGS + LISTS + CONDITIONALS + LOOPS
