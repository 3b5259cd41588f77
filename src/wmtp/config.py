"""Run configuration: pydantic models (unknown keys rejected), YAML presets, dotted overrides, config hash.

A config is built from a preset (or YAML file), then `key.sub=value` overrides are applied, then the whole
tree is validated once. Every error names the offending key and what is allowed.
"""

from __future__ import annotations

import hashlib
import json
from importlib import resources
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ModelWrapValidatorHandler,
    SerializerFunctionWrapHandler,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_serializer,
    model_validator,
)

from wmtp.model.offsets import check_offsets
from wmtp.registry import method_class, used_sections, weightings


class ConfigError(ValueError):
    """A configuration that cannot be used; the message names the key."""


class _Strict(BaseModel):
    # coerce_numbers_to_str: an override like run_dir=123 is YAML-parsed as a number but meant as text
    model_config = ConfigDict(extra="forbid", validate_assignment=True, coerce_numbers_to_str=True)


class SyntheticDataConfig(_Strict):
    """The embedded verifiable code task (see `wmtp.data.synthetic`)."""

    n_problems: int = Field(
        480, ge=10, description="Number of generated problems (split by problem: by default 216 train, 48 valid and "
        "216 test problems).",
    )
    n_correct: int = Field(2, ge=1, description="Correct solutions written per problem.")
    n_incorrect: int = Field(3, ge=0, description="Mutated (plausibly incorrect) solutions per problem.")
    seed: int = Field(0, description="Generator seed; the same seed gives byte-identical data.")
    valid_fraction: float = Field(0.1, gt=0, lt=0.5, description="Fraction of problems in the valid split.")
    test_fraction: float = Field(
        0.45, gt=0, lt=0.5,
        description="Fraction of problems in the test split (0.45: enough test problems for paired per-problem tests).",
    )


class DataConfig(_Strict):
    """Where records come from and how they become token batches."""

    path: str | None = Field(
        None,
        description="Directory holding train.jsonl / valid.jsonl (DESIGN §3 records). None: generate the "
        "embedded synthetic task into `cache_dir`.",
    )
    cache_dir: str = Field(".wmtp_cache", description="Where generated data and trained tokenizers are kept.")
    synthetic: SyntheticDataConfig = Field(default_factory=SyntheticDataConfig)
    tokenizer: str | None = Field(
        None, description="Tokenizer directory or HF name. None: use the tokenizer saved with the data."
    )
    vocab_size: int = Field(1024, ge=300, description="Vocabulary size when a tokenizer is trained on the corpus.")
    max_len: int = Field(256, ge=8, description="Records are truncated to this many tokens.")
    train_on: Literal["correct", "all"] = Field(
        "correct", description="Which records carry LM loss: only correct solutions (uniform MTP) or all."
    )
    pack: bool = Field(
        False,
        description="Pack several training records into each row of max_len tokens; attention and MTP targets "
        "never cross a record (block-diagonal mask, positions restart per record).",
    )
    num_proc: int = Field(1, ge=1, description="Processes that tokenise the records (1: in this process).")
    token_cache: bool = Field(
        False,
        description="Keep tokenised records in <cache_dir>/tokens, keyed by data fingerprint, tokenizer hash and "
        "max_len, and reuse them.",
    )


class LoraConfig(_Strict):
    """LoRA adapters (peft) on every block's linear layers; everything else frozen (one-GPU fine-tuning)."""

    rank: int | None = Field(None, ge=1, description="Adapter rank r; None = full training (no LoRA).")
    alpha: float = Field(16.0, gt=0, description="LoRA scaling α (the update is α/r · B·A).")
    dropout: float = Field(0.0, ge=0, lt=1, description="Dropout on the adapter input.")
    targets: list[str] = Field(
        ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
        description="Linear layers (by name inside each block) that receive adapters.",
    )


class ModelConfig(_Strict):
    """The trunk (an HF causal LM) and the multi-token heads (DESIGN §5)."""

    pretrained: str | None = Field(
        None, description="HF model name or local path for the trunk. None: build from the fields below."
    )
    init_from: str | None = Field(
        None,
        description="A wmtp model directory (a run's model/) to start from, e.g. a shared base model that every "
        "method fine-tunes; its heads and tokenizer must match. None: `pretrained` or a fresh init.",
    )
    n_heads: int = Field(
        4, ge=1, le=16, description="H, the number of prediction heads; head k predicts t + head_offsets[k−1]."
    )
    head_offsets: list[int] | None = Field(
        None,
        description="Leap heads (L-MTP): head k predicts token t + head_offsets[k−1]; H positive, strictly "
        "increasing offsets starting at 1 (head 1 is the next-token head), e.g. [1, 2, 4]. None = [1, 2, …, H].",
    )
    head1_is_trunk_layer: bool = Field(
        True,
        description="Head 1 is the trunk's last transformer block (Meta); otherwise every head is an extra block.",
    )
    d_model: int = Field(128, ge=8, description="Hidden size of a trunk built from config.")
    n_layers: int = Field(4, ge=1, description="Transformer blocks of the trunk (including head 1 when shared).")
    n_attn_heads: int = Field(4, ge=1, description="Attention heads per block.")
    n_kv_heads: int | None = Field(None, ge=1, description="Key/value heads (GQA); None = n_attn_heads.")
    d_ff: int | None = Field(None, ge=8, description="MLP hidden size; None = 4 × d_model rounded to 64.")
    max_seq_len: int = Field(2048, ge=8, description="Maximum positions (RoPE).")
    tie_embeddings: bool = Field(True, description="Tie the unembedding to the input embedding.")
    rope_theta: float = Field(10000.0, gt=0, description="RoPE base.")
    init_std: float = Field(0.02, gt=0, description="Std of the normal initialisation of a model built from config.")
    lora: LoraConfig = Field(default_factory=LoraConfig, description="Optional LoRA fine-tuning (model.lora.rank).")

    @model_validator(mode="after")
    def _check_heads(self) -> ModelConfig:
        if self.d_model % self.n_attn_heads:
            raise ValueError(f"model.d_model={self.d_model} must be divisible by model.n_attn_heads={self.n_attn_heads}")
        kv = self.n_kv_heads or self.n_attn_heads
        if self.n_attn_heads % kv:
            raise ValueError(f"model.n_attn_heads={self.n_attn_heads} must be divisible by model.n_kv_heads={kv}")
        if self.init_from is not None and self.pretrained is not None:
            raise ValueError("set at most one of model.init_from and model.pretrained")
        if self.head1_is_trunk_layer and self.pretrained is None and self.n_layers < 2:
            raise ValueError("model.n_layers must be >= 2 when model.head1_is_trunk_layer=true")
        check_offsets(self.head_offsets, self.n_heads, name="model.head_offsets", next_token_head=True)
        return self

    @model_serializer(mode="wrap")
    def _dump(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        """head_offsets is left out while None, so that configs (and their hashes) from before leap heads stay
        the same."""
        out = handler(self)
        if self.head_offsets is None:
            out.pop("head_offsets", None)
        return out

    @property
    def offsets(self) -> tuple[int, ...]:
        """The head offsets (head_offsets, or 1..n_heads when None)."""
        return check_offsets(self.head_offsets, self.n_heads, name="model.head_offsets", next_token_head=True)


class WeightingConfig(_Strict):
    """How per-(t,k) weights are chosen and normalised (DESIGN §6–§7). Besides the fields below, every registered
    weighting has a section `weighting.<name>` holding its own Config (wmtp.registry)."""

    model_config = ConfigDict(extra="allow", validate_assignment=True, coerce_numbers_to_str=True)

    name: str = Field(
        "uniform",
        description="Weight function: a registered weighting (built in: uniform, rho1, critic, group, gradnorm, hybrid "
        "(two of them combined, weighting.hybrid.of), and the controls "
        "random / shuffled of `control_of`: its weights drawn i.i.d. from their empirical distribution, or "
        "permuted, among the batch's valid entries).",
    )
    control_of: str = Field("rho1", description="The weighting whose weights the random / shuffled controls resample.")
    normalize: Literal["mean", "per_position"] = Field(
        "mean",
        description="mean: mean weight over valid entries of the batch is 1; per_position: Σ_k w[t,k] equals "
        "the number of valid heads at t.",
    )
    clip_min: float | None = Field(None, ge=0, description="Lower clip applied after normalisation.")
    clip_max: float | None = Field(None, gt=0, description="Upper clip applied after normalisation.")
    head_coefs: list[float] | None = Field(
        None, description="λ_k per head (length H); None = all 1. Loss = Σ w·ce·λ_k / Σ_valid 1."
    )

    @model_validator(mode="wrap")
    @classmethod
    def _sections(cls, data: Any, handler: ModelWrapValidatorHandler[WeightingConfig]) -> WeightingConfig:
        """Validate `weighting.<name>` against the registered weighting's Config and default-fill the others, then
        the fields; every error of both is reported at once, each naming its key."""
        if not isinstance(data, dict):
            return handler(data)
        classes = weightings()
        clash = sorted(set(classes) & set(cls.model_fields))
        if clash:
            raise ValueError(f"weighting(s) {clash} are registered under names of weighting's own keys")
        out, errors = {}, []
        for key, value in data.items():
            if key in cls.model_fields:
                out[key] = value
            elif key not in classes:
                errors.append(f"unknown key 'weighting.{key}': allowed keys are "
                              + ", ".join(sorted({*cls.model_fields, *classes})))
            else:
                section = classes[key].Config
                try:
                    out[key] = value if isinstance(value, section) else section.model_validate(value)
                except ValidationError as err:
                    errors += _error_lines(err, ("weighting", key), section)
        for key, wcls in classes.items():
            out.setdefault(key, wcls.Config())
        try:
            result = handler(out)
        except ValidationError as err:
            errors += _error_lines(err, ("weighting",), cls)
        if errors:
            raise ValueError("\n  ".join(errors))
        return result

    @field_validator("name", "control_of")
    @classmethod
    def _registered(cls, value: str, info: ValidationInfo) -> str:
        classes = weightings()
        if value not in classes:
            raise ValueError(f"weighting.{info.field_name}={value!r} is not a registered weighting; "
                             f"registered: {', '.join(classes)}")
        if info.field_name == "control_of" and classes[value].is_control:
            raise ValueError(f"weighting.control_of={value!r} is itself a control; name the weighting it resamples")
        return value

    @model_validator(mode="after")
    def _check_clip(self) -> WeightingConfig:
        if self.clip_min is not None and self.clip_max is not None and self.clip_min > self.clip_max:
            raise ValueError(f"weighting.clip_min={self.clip_min} exceeds weighting.clip_max={self.clip_max}")
        if self.head_coefs is not None and any(c < 0 for c in self.head_coefs):
            raise ValueError(f"weighting.head_coefs must be >= 0, got {self.head_coefs}")
        return self

    @model_serializer(mode="wrap")
    def _dump(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        """Sections of weightings the run does not use are left out while they hold their defaults, so that a
        config (and its hash) does not change when another weighting is installed."""
        out = handler(self)
        used = used_sections(self)  # a control's method's and a hybrid's components' sections count as used
        for key, section in (self.__pydantic_extra__ or {}).items():
            if key not in used and section == type(section)():
                out.pop(key, None)
        return out

    def section(self, name: str) -> BaseModel:
        """The Config of the registered weighting `name` (its defaults unless set)."""
        return getattr(self, name)


class OptimConfig(_Strict):
    """AdamW with linear warmup then cosine decay to `min_lr_ratio · lr`."""

    lr: float = Field(3e-3, gt=0, description="Peak learning rate.")
    weight_decay: float = Field(0.1, ge=0, description="AdamW decoupled weight decay (matrices only).")
    beta1: float = Field(0.9, ge=0, lt=1, description="AdamW β1.")
    beta2: float = Field(0.95, ge=0, lt=1, description="AdamW β2.")
    eps: float = Field(1e-8, gt=0, description="AdamW ε.")
    warmup_steps: int = Field(20, ge=0, description="Linear warmup steps.")
    min_lr_ratio: float = Field(0.1, ge=0, le=1, description="Final lr as a fraction of the peak.")
    grad_clip: float | None = Field(1.0, gt=0, description="Max global grad norm; None disables clipping.")


class TrainConfig(_Strict):
    """The training loop."""

    max_steps: int = Field(300, ge=1, description="Optimizer steps.")
    batch_size: int = Field(16, ge=1, description="Records per micro-batch.")
    grad_accum: int = Field(1, ge=1, description="Micro-batches per optimizer step.")
    precision: Literal["fp32", "bf16"] = Field("fp32", description="bf16 enables autocast; weights stay fp32.")
    device: Literal["auto", "cpu", "cuda"] = Field("auto", description="auto: cuda when available, else cpu.")
    ce_chunk_tokens: int = Field(1024, ge=16, description="Tokens per chunk of the chunked unembedding + CE.")
    eval_every: int = Field(50, ge=1, description="Validation every N steps (and at the end).")
    eval_batches: int | None = Field(None, ge=1, description="Validation batches; None = the whole valid split.")
    log_every: int = Field(1, ge=1, description="Write a metrics row every N steps.")
    ckpt_every: int = Field(100, ge=1, description="Atomic checkpoint every N steps (and at the end).")
    keep_checkpoints: int = Field(2, ge=1, description="Checkpoints kept on disk (oldest removed first).")
    max_bad_steps: int = Field(10, ge=0, description="Stop after this many non-finite losses (each is skipped).")
    progress: bool = Field(True, description="Show a rich progress bar.")
    activation_checkpointing: bool = Field(
        False, description="Recompute each block's activations in the backward instead of storing them."
    )
    check_memory: bool = Field(
        True, description="Refuse to train when the memory estimate exceeds the device memory (see `wmtp memory`)."
    )
    device_memory_gb: float | None = Field(
        None, gt=0, description="Device memory (GiB) the estimate is checked against; None = the device's own (GPU "
        "memory, or RAM on CPU)."
    )
    heads_warmup_steps: int = Field(
        0, ge=0, description="Train only the extra heads for the first N optimizer steps: the trunk (embeddings and "
        "tied unembedding, final norm, every trunk block including head 1's when it is the trunk's last) gets no "
        "gradient and no AdamW update (its moments stay untouched), as Medusa-1 trains new heads on a frozen "
        "pretrained model. The weighting's own modules (e.g. a critic's value head) train as usual.",
    )
    tensorboard: bool = Field(
        False, description="Also write every metrics row to TensorBoard event files in run_dir/tb/ (scalars "
        "<kind>/<field>, weight histograms per head); metrics.jsonl stays the source of truth."
    )


class DistributedConfig(_Strict):
    """Training under torchrun (world size > 1): FSDP2 per block and head (wmtp.train.distributed)."""

    param_dtype: Literal["fp32", "bf16"] = Field(
        "fp32", description="FSDP compute dtype of blocks and heads (bf16: MixedPrecisionPolicy, fp32 gradient reduce)."
    )
    backend: Literal["auto", "gloo", "nccl"] = Field("auto", description="Process-group backend; auto: nccl on GPUs.")


class RunConfig(_Strict):
    """A whole run. `run_dir` receives config.yaml, meta.json, metrics.jsonl and checkpoints/."""

    seed: int = Field(0, description="Seeds model init, data order and every RNG of the run.")
    run_dir: str = Field("runs/tiny", description="Output directory of the run.")
    data: DataConfig = Field(default_factory=DataConfig)
    model: ModelConfig = Field(default_factory=ModelConfig)
    weighting: WeightingConfig = Field(default_factory=WeightingConfig)
    optim: OptimConfig = Field(default_factory=OptimConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    distributed: DistributedConfig = Field(default_factory=DistributedConfig)

    @model_validator(mode="after")
    def _check_cross(self) -> RunConfig:
        coefs = self.weighting.head_coefs
        if coefs is not None and len(coefs) != self.model.n_heads:
            raise ValueError(
                f"weighting.head_coefs has {len(coefs)} entries but model.n_heads={self.model.n_heads}"
            )
        mc = self.model
        # checked only for a model built from config: a pretrained trunk's (model.pretrained) or a trained wmtp
        # model's (model.init_from) positions come from its checkpoint, which the config does not know
        if mc.pretrained is None and mc.init_from is None and self.data.max_len > mc.max_seq_len:
            raise ValueError(
                f"data.max_len={self.data.max_len} exceeds model.max_seq_len={mc.max_seq_len}: records of "
                f"data.max_len tokens need that many positions; lower data.max_len or raise model.max_seq_len"
            )
        method_class(self.weighting.name, self.weighting.control_of).check_config(self)
        return self


PRESETS = ("tiny", "1b", "7b-fsdp")


def preset_path(name: str) -> Path:
    """Path of a preset shipped in the package (`tiny`, …)."""
    path = Path(str(resources.files("wmtp") / "presets" / f"{name}.yaml"))
    if not path.is_file():
        raise ConfigError(f"unknown preset {name!r}; shipped presets: {', '.join(PRESETS)}")
    return path


def _parse_value(text: str) -> Any:
    """Parse an override value with YAML rules (`3e-4` → float, `true` → bool, `[1,2]` → list, `null`)."""
    value = yaml.safe_load(text) if text.strip() else ""
    if isinstance(value, str) and _looks_like_float(value):
        return float(value)  # YAML 1.1 reads `3e-4` as a string
    return value


def _looks_like_float(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def apply_overrides(tree: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Return a copy of `tree` with `a.b.c=value` overrides applied; unknown keys are checked by validation."""
    out = json.loads(json.dumps(tree))
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r} is not of the form key.sub=value")
        key, text = item.split("=", 1)
        parts = key.strip().split(".")
        node = out
        for depth, part in enumerate(parts[:-1]):
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise ConfigError(f"override {key!r}: {'.'.join(parts[: depth + 1])} is not a section")
            node = child
        node[parts[-1]] = _parse_value(text)
    return out


def _error_lines(err: ValidationError, prefix: tuple = (), root: type[BaseModel] | None = None) -> list[str]:
    """One line per error of `err`, raised by `root` (default RunConfig) at the config path `prefix`."""
    lines = []
    for e in err.errors():
        key = ".".join(str(p) for p in (*prefix, *e["loc"])) or "<root>"
        if e["type"] == "extra_forbidden":
            lines.append(f"unknown key {key!r}: {_allowed_keys(e['loc'], root or RunConfig)}")
        elif e["type"] == "value_error":  # our validators already name the keys involved
            lines.append(str(e["ctx"]["error"]))
        else:
            lines.append(f"{key}: {e['msg']} (got {e.get('input')!r})")
    return lines


def _allowed_keys(loc: tuple, root: type[BaseModel]) -> str:
    model = root
    for part in loc[:-1]:
        field = model.model_fields.get(str(part))
        if field is None or not (isinstance(field.annotation, type) and issubclass(field.annotation, BaseModel)):
            return "not allowed here"
        model = field.annotation
    return "allowed keys are " + ", ".join(sorted(model.model_fields))


def validate(tree: dict[str, Any]) -> RunConfig:
    """Validate a config tree; raise ConfigError naming every bad key."""
    try:
        return RunConfig.model_validate(tree)
    except ValidationError as err:
        raise ConfigError("invalid config:\n  " + "\n  ".join(_error_lines(err))) from None


def load_config(source: str | Path | None = None, overrides: list[str] | None = None) -> RunConfig:
    """Load a preset name or YAML path (default: the `tiny` preset), apply dotted overrides, validate."""
    path = preset_path("tiny") if source is None else Path(source)
    if source is not None and not path.exists():
        if str(source) in PRESETS:
            path = preset_path(str(source))
        else:
            raise ConfigError(f"config file {str(source)!r} not found (or a preset: {', '.join(PRESETS)})")
    tree = yaml.safe_load(path.read_text()) or {}
    if not isinstance(tree, dict):
        raise ConfigError(f"config file {path} must hold a mapping at the top level")
    return validate(apply_overrides(tree, overrides or []))


def config_hash(cfg: RunConfig) -> str:
    """sha256 (first 16 hex) of the resolved config, excluding `run_dir` (where it runs is not what it is)."""
    tree = cfg.model_dump(mode="json")
    tree.pop("run_dir")
    return hashlib.sha256(json.dumps(tree, sort_keys=True).encode()).hexdigest()[:16]


def dump_yaml(cfg: RunConfig) -> str:
    return yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False)
