"""The run configuration: YAML presets validated by pydantic, with `--set` overrides.

Every model forbids unknown fields, so a typo fails before any work, naming the field and
whether it came from the YAML file or from a `--set`.
"""

import hashlib
import importlib.resources
import json
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from pf1m.filters import registry
from pf1m.schemas.hashed_view import hashed_fields
from pf1m.schemas.modelref import ModelSource
from pf1m.schemas.sample import TASKS, Task


class ConfigError(ValueError):
    """A config that cannot run; the message names the field and where it came from."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class InputEntry(_Strict):
    pattern: str
    source: str | None = None  # overrides the `source` in each sample's JSON when set


class Decoding(_Strict):
    max_tokens: int = Field(gt=0)
    temperature: float = Field(ge=0.0)
    top_k: int = Field(default=0, ge=-1)  # 0 or -1: off
    top_p: float = Field(default=1.0, gt=0.0, le=1.0)
    repetition_penalty: float = Field(default=1.0, gt=0.0)
    stop: list[str] = Field(default_factory=list)
    # Ban a token that would repeat an n-gram of the generated text. vLLM: its per-request
    # n-gram logits processor over the output; transformers: `generate`'s own, which also
    # counts the prompt's n-grams.
    no_repeat_ngram_size: int | None = Field(default=None, gt=0)
    # Beam search with this many beams (None: one sampled sequence). transformers: `generate`
    # with num_beams, sampling inside the beams when temperature > 0 (the paper's decoding).
    # vLLM: its beam search, which ranks beams by log-probability and samples nothing; it uses
    # only max_tokens, temperature and length_penalty, and refuses `stop` and n-gram bans.
    beam_width: int | None = Field(default=None, gt=1)
    length_penalty: float = 1.0  # beam search only: score = logprob / length ** penalty


class Engine(_Strict):
    """vLLM engine settings that change speed and memory, not what is generated."""

    max_num_seqs: int = Field(default=64, gt=0)
    enforce_eager: bool = True
    gpu_memory_utilization: float = Field(default=0.9, gt=0.0, le=1.0)
    cpu_kvcache_gb: int = Field(default=1, gt=0)
    # None: vLLM's default. The CPU build must turn it off when requests carry seeds: a
    # discarded partial-prefill token rewinds the seeded generator, which CPU generators refuse.
    enable_chunked_prefill: bool | None = None
    # How often a replica checks that its engine is alive; a dead one ends the replica so that
    # Ray restarts it (a request sent as the engine dies may otherwise never be answered).
    health_check_s: float = Field(default=2.0, gt=0.0)
    # vLLM's CPU build, one model rank: "uni" runs the model inside the engine-core process;
    # "mp" (vLLM's CPU default) starts one more worker process, whose OpenMP threads it binds to
    # cores (VLLM_CPU_OMP_THREADS_BIND, read only by "mp"). Replicas that share a node gain
    # nothing from that binding (set resources.torch_threads to size their threads), and the
    # extra process costs its start: importing torch and vLLM again, ~10 s per replica start on
    # a 2-core machine. "mp" suits one replica that owns a NUMA node. GPU engines, and tensor or
    # pipeline parallelism in extra_args, keep vLLM's own choice.
    cpu_executor: Literal["uni", "mp"] = "uni"
    extra_args: dict[str, Any] = Field(default_factory=dict)  # passed to vLLM's EngineArgs


class TransformersEngine(_Strict):
    """The `transformers` backend's batching: speed only, not what is generated (except in
    deterministic mode, which forces one sample per generate call)."""

    batch_size: int = Field(default=8, gt=0)
    max_wait_ms: float = Field(default=20.0, ge=0.0)
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"


class Adapter(_Strict):
    """A LoRA adapter (peft format, local path or hub id) applied per request. A sample uses
    the first adapter whose `sources` and `tasks` (each: any when empty) match it; none: the
    base model."""

    name: str = Field(pattern=r"^[A-Za-z0-9_.-]+$")
    path: str
    sources: list[str] = Field(default_factory=list)
    tasks: list[Task] = Field(default_factory=list)

    def matches(self, source: str | None, task: str) -> bool:
        return (not self.sources or source in self.sources) and (
            not self.tasks or task in self.tasks
        )


GUANACO_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


class FlamingoLora(_Strict):
    """The LoRA on LLaMA's projections: a peft folder (its adapter_config.json gives r,
    lora_alpha and target_modules; its weights are not used, FLAMINGO.md), or r/alpha/targets."""

    path: str | None = None
    r: int | None = Field(default=None, gt=0)
    alpha: float | None = Field(default=None, gt=0)
    targets: list[str] = Field(default_factory=lambda: list(GUANACO_TARGETS))

    @model_validator(mode="after")
    def _one_source(self) -> "FlamingoLora":
        if (self.path is None) == (self.r is None or self.alpha is None):
            raise ValueError("lora: give either path (a peft folder) or both r and alpha")
        return self


class Flamingo(_Strict):
    """What the `flamingo` backend needs beyond `rewriter.model` (the LLaMA folder or hub id, or
    a folder written by `pf1m flamingo-merge`, which needs none of this)."""

    vision: str = "ViT-L-14-336"  # open_clip name, or a path to an open_clip model-config JSON
    vision_pretrained: str | None = "openai"  # open_clip tag, a local weights file or `repo:file`
    cross_attn_every_n_layers: int = Field(default=4, gt=0)
    checkpoints: list[str] = Field(default_factory=list)  # load order; local paths or `repo:file`
    lora: FlamingoLora | None = None


# The prompt keys that used to sit directly under `rewriter` (now under `rewriter.prompt`).
FLAT_PROMPT_KEYS: tuple[str, ...] = ("system", "template", "answer_marker")
INLINE_TEMPLATE_MARKS: tuple[str, ...] = ("{%", "{{")


class Prompt(_Strict):
    """How a sample becomes the rewriter's prompt, and how its answer is read back.

    raw: `template` over `{system}`, `{instruction}` and `{raw}` is the whole prompt (the
    paper's). chat: a system message and a user message holding the images (at the `<image>`
    markers, else first) and `template` over `{instruction}` and `{raw}`, rendered with the
    model's own chat template (or `chat_template`) with the generation prompt added."""

    style: Literal["raw", "chat"] = "raw"
    system: str | None = None  # chat: None sends no system message (the template's default)
    template: str
    answer_marker: str = ""  # the answer is the text after its last occurrence; "": all of it
    # chat: a Jinja chat template overriding the model's, inline or a file path; a path is read
    # when the config loads and kept inline, so the config hash covers its text.
    chat_template: str | None = None
    chat_template_kwargs: dict[str, Any] = Field(default_factory=dict)  # e.g. enable_thinking
    # A reasoning block between these is cut from the answer into the `reasoning` column.
    think_start: str = "<think>"
    think_end: str = "</think>"

    @model_validator(mode="after")
    def _fields(self) -> "Prompt":
        for name in ("{instruction}", "{raw}"):
            if name not in self.template:
                raise ValueError(f"template must contain {name}")
        if self.style == "raw":
            if "{system}" in self.template and self.system is None:
                raise ValueError("system: the template uses {system} but no system is set")
            if self.chat_template is not None or self.chat_template_kwargs:
                raise ValueError("chat_template, chat_template_kwargs: only for style: chat")
        elif "{system}" in self.template:
            raise ValueError(
                "template: a chat rewrite instruction has no {system}; the system message is "
                "its own message (prompt.system)"
            )
        if not self.think_start or not self.think_end:
            raise ValueError("think_start, think_end: must not be empty")
        return self

    @model_validator(mode="after")
    def _read_chat_template(self) -> "Prompt":
        value = self.chat_template
        if value is None or any(m in value for m in INLINE_TEMPLATE_MARKS):
            return self
        path = Path(value).expanduser()
        try:
            self.chat_template = path.read_text()
        except OSError as exc:
            raise ValueError(
                f"chat_template: cannot read {value} ({exc.strerror}); an inline template "
                "contains {% or {{"
            ) from None
        return self


class ImageSize(_Strict):
    """Dynamic-resolution models (Qwen-VL and the like): the pixel range an image is resized
    into, which sets its number of image tokens. Passed to the processor and to vLLM's
    `mm_processor_kwargs`; None: the processor's own."""

    max_pixels: int | None = Field(default=None, gt=0)
    min_pixels: int | None = Field(default=None, gt=0)

    @model_validator(mode="after")
    def _order(self) -> "ImageSize":
        if self.max_pixels and self.min_pixels and self.min_pixels > self.max_pixels:
            raise ValueError("min_pixels must not exceed max_pixels")
        return self

    def processor_kwargs(self) -> dict[str, int]:
        return {k: v for k, v in self.model_dump().items() if v is not None}


class Rewriter(_Strict):
    # vllm: continuous batching, the default. transformers: batched `generate`, for models
    # vLLM cannot load and for deterministic runs. flamingo: the paper's Polite Flamingo
    # (pf1m/models/flamingo/), batched `generate` on transformers.
    backend: Literal["vllm", "transformers", "flamingo"] = "vllm"
    # Rows that do not depend on batching: transformers one sample per call with its own
    # seed, or vLLM one sequence at a time. Slower; for runs that must compare row for row.
    deterministic: bool = False
    model: str  # hub id or local path
    tokenizer: str | None = None
    image_token: str | None = None  # default: the model processor's own image token
    trust_remote_code: bool = False
    dtype: str = "auto"
    max_model_len: int = Field(gt=0)
    max_images: int = Field(default=2, ge=0)
    prompt: Prompt
    image: ImageSize = Field(default_factory=ImageSize)
    decoding: Decoding
    adapters: list[Adapter] = Field(default_factory=list)
    engine: Engine = Field(default_factory=Engine)
    transformers: TransformersEngine = Field(default_factory=TransformersEngine)
    flamingo: Flamingo | None = None  # the `flamingo` backend's files (set for it by default)
    # Seconds a request may spend inside a replica (queueing there included). One that takes
    # longer is retried once on a restarted engine, then quarantined as `rewrite` / `timeout`.
    # None: no limit. Operational, like resources: not part of the config hash.
    request_timeout_s: float | None = Field(default=None, gt=0.0)

    @model_validator(mode="before")
    @classmethod
    def _flat_prompt_keys(cls, data: Any) -> Any:
        if isinstance(data, dict):
            flat = [k for k in FLAT_PROMPT_KEYS if k in data]
            if flat:
                moved = ", ".join(f"rewriter.prompt.{k}" for k in flat)
                raise ValueError(
                    f"{', '.join(flat)}: prompt settings moved under rewriter.prompt; write "
                    f"{moved} (rewriter.prompt.style: raw is the paper's template)"
                )
        return data

    @model_validator(mode="after")
    def _flamingo_prompt(self) -> "Rewriter":
        if self.backend == "flamingo" and self.prompt.style == "chat":
            raise ValueError(
                "prompt.style: chat needs a model with a chat template; the flamingo backend "
                "takes the paper's raw template only (prompt.style: raw)"
            )
        if self.backend == "flamingo" and self.image != ImageSize():
            raise ValueError("image: the flamingo backend's vision encoder has a fixed size")
        return self

    @model_validator(mode="after")
    def _unique_adapters(self) -> "Rewriter":
        names = [a.name for a in self.adapters]
        if len(set(names)) != len(names):
            raise ValueError("adapters: names must be unique")
        return self

    def adapter_for(self, source: str | None, task: str) -> str | None:
        """The adapter name a sample is rewritten with (None: the base model)."""
        return next((a.name for a in self.adapters if a.matches(source, task)), None)

    @model_validator(mode="after")
    def _flamingo_block(self) -> "Rewriter":
        if self.backend == "flamingo":
            if self.flamingo is None:
                self.flamingo = Flamingo()
            if self.adapters:
                raise ValueError("adapters: the flamingo backend serves none (merge them instead)")
        elif self.flamingo is not None:
            raise ValueError(f"flamingo: set, but rewriter.backend is {self.backend}")
        return self

    @model_validator(mode="after")
    def _beam_on_vllm(self) -> "Rewriter":
        d = self.decoding
        if self.backend == "vllm" and d.beam_width:
            if d.stop:
                raise ValueError("decoding.stop: vLLM beam search has no stop strings")
            if d.no_repeat_ngram_size:
                raise ValueError(
                    "decoding.no_repeat_ngram_size: vLLM beam search cannot ban n-grams"
                )
        return self


class LengthFilter(_Strict):
    """Thresholds are this project's choice (PAPER.md gives none); words split on whitespace."""

    min_words: int = Field(ge=0)
    max_words: int = Field(gt=0)
    reject_no_eos: bool = True

    @model_validator(mode="after")
    def _order(self) -> "LengthFilter":
        if self.min_words > self.max_words:
            raise ValueError("min_words must not exceed max_words")
        return self


class ChangeFilter(_Strict):
    """'Unchanged' = equal after case, whitespace and punctuation normalisation."""


class _ModelFilter(_Strict):
    model: str  # hub id or local path
    trust_remote_code: bool = False


class StsFilter(_ModelFilter):
    """Cosine similarity of raw annotation and rewrite (sentence-transformers)."""

    threshold: float = Field(ge=-1.0, le=1.0)


class NliFilter(_ModelFilter):
    """Cross-encoder NLI on (premise, hypothesis); reject when the argmax is contradiction."""

    premise: str
    hypothesis: str

    @model_validator(mode="after")
    def _fields(self) -> "NliFilter":
        for name in ("premise", "hypothesis"):
            text = getattr(self, name)
            if not any(f in text for f in ("{rewrite}", "{raw}", "{question}")):
                raise ValueError(f"{name} must use {{rewrite}}, {{raw}} or {{question}}")
        return self


class ClipParagraphFilter(_ModelFilter):
    """open_clip model name (`ViT-L-14-336`, `local-dir:PATH`, `hf-hub:ID`) and its weights tag."""

    pretrained: str | None = None
    threshold: float
    max_sentences: int = Field(default=10, gt=0)


class RewardFilter(_ModelFilter):
    """Sequence-classification reward model; thresholds off (None) records the reward only."""

    min_reward: float | None = None
    min_gain: float | None = None  # reward(output) - reward(original)


class Filters(_Strict):
    length: LengthFilter
    change: ChangeFilter = Field(default_factory=ChangeFilter)
    sts: StsFilter | None = None
    nli: NliFilter | None = None
    clip_paragraph: ClipParagraphFilter | None = None
    reward: RewardFilter | None = None
    # Which filters apply to which task, in order; cheap filters first. Names: the registry's
    # (pf1m/filters/registry.py) and the plugins'.
    tasks: dict[Task, list[str]]
    # cheap_first: a row a rule filter rejected is not sent to the model scorers (its scores
    # stay null); full: every row is scored, for audits that want every score.
    scoring: Literal["cheap_first", "full"] = "cheap_first"
    # Filters of your own, by import path (`package.module:Class`, a pf1m.filters.base.Filter);
    # every Ray worker imports them too, so the module must be importable on every node.
    plugins: list[str] = Field(default_factory=list)
    # Settings of the plugin filters, by filter name (each filter reads its own).
    options: dict[str, dict[str, Any]] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _every_task(self) -> "Filters":
        missing = [t for t in TASKS if t not in self.tasks]
        if missing:
            raise ValueError(f"tasks: no filter list for {', '.join(missing)}")
        used = {name for names in self.tasks.values() for name in names}
        known = set(registry.BUILTIN)
        if self.plugins or not used <= known:
            known = set(registry.load(self.plugins))
        clash = sorted((known - set(registry.BUILTIN)) & set(type(self).model_fields))
        if clash:
            raise ValueError(f"plugins: the filter name {', '.join(clash)} is a filters field")
        strays = sorted(set(self.options) - known)
        if strays:
            raise ValueError(f"options: no filter named {', '.join(strays)}")
        unknown = sorted(used - known)
        if unknown:
            raise ValueError(
                f"tasks: no filter named {', '.join(unknown)} (known: {', '.join(sorted(known))})"
            )
        builtin_models = set(type(self).model_fields) & set(registry.BUILTIN)
        unset = sorted(n for n in used & builtin_models if getattr(self, n) is None)
        if unset:
            raise ValueError(f"tasks use {', '.join(unset)} but no such section is configured")
        return self

    def model_filters(self) -> list[str]:
        """The model filters some task uses, in scoring order (pf1m/filters/registry.py)."""
        used = {name for names in self.tasks.values() for name in names}
        return [f.name for f in registry.model_filters(self.plugins) if f.name in used]


class Resources(_Strict):
    """How the work is spread; may change between resumes without changing the output."""

    rewriter_replicas: int = Field(default=1, gt=0)
    gpus_per_replica: float = Field(default=1.0, ge=0.0)
    cpus_per_replica: float = Field(default=1.0, gt=0.0)
    shards_in_flight: int = Field(default=4, gt=0)
    batch_size: int = Field(default=8, gt=0)  # samples per call to a rewriter replica
    batches_in_flight_per_shard: int = Field(default=4, gt=0)
    score_calls_in_flight_per_shard: int = Field(default=16, gt=0)
    shard_task_cpus: float = Field(default=0.25, gt=0.0)
    shard_retries: int = Field(default=1, ge=0)  # Ray retries of a shard task lost to a crash
    actor_max_restarts: int = Field(default=2, ge=0)  # Ray restarts of a dead rewriter replica
    torch_threads: int | None = Field(default=None, gt=0)
    # The run lock's heartbeat is older than this: its holder is gone (see pf1m/pipeline/lock.py).
    lock_ttl_s: float = Field(default=120.0, gt=0.0)
    # CPU niceness of the workers of the local Ray a run starts (Ray's own default is 15: below
    # every other process, so a busy machine starves the run). 0: the run's own priority, so
    # `nice pf1m run` lowers all of it. A `ray start` cluster keeps what its nodes were given
    # (RAY_worker_niceness when they started).
    worker_niceness: int = Field(default=0, ge=0, le=19)
    # spread: rewriter replicas on as many nodes as possible (Ray's SPREAD); pack: Ray default
    rewriter_placement: Literal["spread", "pack"] = "spread"


class Job(_Strict):
    """How `pf1m submit` sends the run through Ray's Job Submission API."""

    # Merged with the working_dir (this project without its environment and data).
    runtime_env: dict[str, Any] = Field(default_factory=dict)
    entrypoint_num_cpus: float = Field(default=0.0, ge=0.0)  # the job driver's own CPUs
    excludes: list[str] = Field(
        default_factory=lambda: [
            ".venv",
            ".git",
            "demo_out",
            "**/__pycache__",
            "*.egg-info",
            "bench/results",
            "docs",
        ]
    )


class ScorerGroup(_Strict):
    """One Ray actor (per replica) holding these scorers' models; several small models may
    share an actor (on few CPU cores one process per model only adds memory)."""

    scorers: list[str] = Field(min_length=1)  # model filters' names
    replicas: int = Field(default=1, gt=0)
    num_gpus: float = Field(default=0.0, ge=0.0)
    num_cpus: float = Field(default=1.0, gt=0.0)


class Scoring(_Strict):
    """How scorers run: grouping into actors, batch sizes, how long a batch waits to fill."""

    groups: list[ScorerGroup] = Field(
        default_factory=lambda: [ScorerGroup(scorers=["sts", "nli", "clip_paragraph", "reward"])]
    )
    batch_size: dict[str, int] = Field(
        default_factory=lambda: {"sts": 64, "nli": 32, "clip_paragraph": 32, "reward": 16}
    )
    # Items per forward pass, run on length-sorted chunks of the gathered batch (default: the
    # batch size). On CPUs small chunks waste less compute on padding.
    forward_batch_size: dict[str, int] = Field(default_factory=dict)
    max_wait_ms: float = Field(default=20.0, ge=0.0)
    torch_threads: int | None = Field(default=None, gt=0)
    # Seconds a scorer call may spend in its actor, queueing included; then the actor is
    # restarted and the call retried once, then its samples quarantined `score:NAME`/`timeout`
    # (off by default; operational, not hashed).
    call_timeout_s: float | None = Field(default=None, gt=0.0)

    def chunk(self, name: str) -> int:
        return self.forward_batch_size.get(name, self.batch_size[name])

    @model_validator(mode="after")
    def _each_once(self) -> "Scoring":
        names = [n for g in self.groups for n in g.scorers]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"scorer {', '.join(dupes)} is in more than one group")
        return self

    def group_of(self, name: str) -> int | None:
        return next((i for i, g in enumerate(self.groups) if name in g.scorers), None)


class Writer(_Strict):
    embed_images: bool = True
    row_group_size: int = Field(default=256, gt=0)


class RunConfig(_Strict):
    input: str | list[InputEntry]
    output: str
    seed: int = 0
    limit_per_shard: int | None = Field(default=None, gt=0)  # smoke runs (`--limit`)
    progress_interval_s: float = Field(default=10.0, gt=0.0)  # progress lines in job logs
    rewriter: Rewriter
    filters: Filters
    resources: Resources = Field(default_factory=Resources)
    scoring: Scoring = Field(default_factory=Scoring)
    writer: Writer = Field(default_factory=Writer)
    job: Job = Field(default_factory=Job)

    @model_validator(mode="after")
    def _scorers_placed(self) -> "RunConfig":
        used = self.filters.model_filters()
        missing = [n for n in used if self.scoring.group_of(n) is None]
        if missing:
            raise ValueError(f"scoring.groups: no group holds {', '.join(missing)}")
        scorers = {f.name for f in registry.model_filters(self.filters.plugins)}
        strays = sorted({n for g in self.scoring.groups for n in g.scorers} - scorers)
        if strays:
            raise ValueError(f"scoring.groups: {', '.join(strays)} is not a model filter")
        unsized = [n for n in used if n not in self.scoring.batch_size]
        if unsized:
            raise ValueError(f"scoring.batch_size: no batch size for {', '.join(unsized)}")
        return self

    def inputs(self) -> list[InputEntry]:
        if isinstance(self.input, str):
            return [InputEntry(pattern=self.input)]
        return list(self.input)

    def model_sources(self) -> list[ModelSource]:
        """Every model and weights file this run loads, with the config field naming it: the
        rewriter (and its tokenizer), its adapters (`adapter:NAME`), the flamingo backend's
        files, and the model filters some task uses. Each is pinned to a revision at run start
        (pf1m/pipeline/revisions.py)."""
        rw, src = self.rewriter, ModelSource
        out = [src("rewriter", "rewriter.model", rw.model, "repo")]
        if rw.tokenizer is not None:  # pinned with the model; no fingerprint (version-1 view)
            out.append(src("tokenizer", "rewriter.tokenizer", rw.tokenizer, "repo", hashed=False))
        for i, a in enumerate(rw.adapters):
            out.append(src(f"adapter:{a.name}", f"rewriter.adapters.{i}.path", a.path, "repo",
                           contents=True))  # fmt: skip
        flamingo = rw.flamingo
        if flamingo is not None:  # every file the flamingo backend loads on top of `model`
            field = "rewriter.flamingo"
            for i, ref in enumerate(flamingo.checkpoints):
                out.append(src(f"flamingo:checkpoint:{i}", f"{field}.checkpoints.{i}", ref, "file"))
            if flamingo.lora is not None and flamingo.lora.path is not None:
                out.append(src("flamingo:lora", f"{field}.lora.path", flamingo.lora.path, "repo"))
            out.append(src("flamingo:vision", f"{field}.vision", flamingo.vision, "open_clip",
                           flamingo.vision_pretrained, f"{field}.vision_pretrained"))  # fmt: skip
        for name in self.filters.model_filters():
            f, field = getattr(self.filters, name), f"filters.{name}"
            if name == "clip_paragraph":
                out.append(src(name, f"{field}.model", f.model, "open_clip", f.pretrained,
                               f"{field}.pretrained"))  # fmt: skip
            else:
                out.append(src(name, f"{field}.model", f.model, "repo"))
        return out

    def models(self) -> dict[str, str]:
        """Role -> the model or file as written (`model_sources` says how each is read)."""
        return {s.role: s.text for s in self.model_sources()}

    def hashed_view(self, fingerprints: dict[str, str]) -> dict[str, Any]:
        """Only what changes the output; resources, batch sizes and engine tuning may change.
        A field added after version 1 enters only when set away from its default
        (pf1m/schemas/hashed_view.py), so upgrading keeps the hashes of existing runs: add
        output-changing fields to the models above, not new keys here."""
        operational = frozenset({"engine", "transformers", "request_timeout_s", "prompt", "image"})
        rewriter = hashed_fields(self.rewriter, "rewriter", operational)
        return {
            "rewriter": {**rewriter, **_hashed_prompt(self.rewriter)},
            "model_fingerprints": fingerprints,
            "seed": self.seed,
            "limit_per_shard": self.limit_per_shard,
            "filters": hashed_fields(self.filters, "filters"),
            "embed_images": self.writer.embed_images,
        }


def _hashed_prompt(rewriter: Rewriter) -> dict[str, Any]:
    """The prompt's part of the hashed view. A raw prompt keeps the flat keys of the view before
    the prompt block existed (`system`, `template`, `answer_marker` under `rewriter`), so
    existing runs keep their hash; its other fields count only when changed from their
    defaults, as does `image`. A chat prompt is hashed whole."""
    prompt = rewriter.prompt
    view: dict[str, Any] = {}
    if prompt.style == "chat":
        view["prompt"] = prompt.model_dump()
    else:
        view.update(prompt.model_dump(include=set(FLAT_PROMPT_KEYS)))
        changed = prompt.model_dump(exclude_defaults=True, exclude=set(FLAT_PROMPT_KEYS))
        if changed:
            view["prompt"] = changed
    if rewriter.image != ImageSize():
        view["image"] = rewriter.image.model_dump()
    return view


def migrate_flat_prompt(config: dict[str, Any]) -> dict[str, Any]:
    """A config recorded in run.json before the prompt block existed, with its flat prompt keys
    moved under `rewriter.prompt` (style raw), so its runs can be resumed, audited and
    refiltered. A config a user writes is refused with the flat keys (see `Rewriter`)."""
    rewriter = config.get("rewriter")
    if not isinstance(rewriter, dict) or "prompt" in rewriter:
        return config
    flat = {k: rewriter[k] for k in FLAT_PROMPT_KEYS if k in rewriter}
    if not flat:
        return config
    rest = {k: v for k, v in rewriter.items() if k not in FLAT_PROMPT_KEYS}
    return {**config, "rewriter": {**rest, "prompt": {"style": "raw", **flat}}}


def config_hash(view: dict[str, Any]) -> str:
    blob = json.dumps(view, sort_keys=True, separators=(",", ":")).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def _deep_merge(base: dict, over: dict) -> dict:
    merged = dict(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def _read_yaml(path: Path, seen: tuple[Path, ...] = ()) -> dict:
    """Read a preset; `extends: other.yaml` (relative to this file) is merged underneath."""
    if path in seen:
        raise ConfigError(f"{path}: `extends` loops back on itself")
    try:
        data = yaml.safe_load(path.read_text())
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read config ({exc.strerror})") from exc
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of config fields")
    parent = data.pop("extends", None)
    if parent is None:
        return data
    return _deep_merge(_read_yaml((path.parent / parent).resolve(), (*seen, path)), data)


def parse_override(item: str) -> tuple[list[str], Any]:
    key, sep, value = item.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"--set {item!r}: expected dotted.key=value")
    try:
        parsed = yaml.safe_load(value) if value.strip() else ""
    except yaml.YAMLError as exc:
        raise ConfigError(f"--set {item!r}: value is not valid YAML: {exc}") from exc
    return key.strip().split("."), parsed


def apply_overrides(data: dict, overrides: list[str]) -> dict[str, str]:
    """Apply `--set` items in place; returns dotted key -> the item, to name it in errors."""
    origins: dict[str, str] = {}
    for item in overrides:
        path, value = parse_override(item)
        node = data
        for part in path[:-1]:
            child = node.get(part)
            if child is None:
                child = node[part] = {}
            if not isinstance(child, dict):
                raise ConfigError(f"--set {item!r}: {part!r} is not a mapping")
            node = child
        node[path[-1]] = value
        origins[".".join(path)] = item
    return origins


def _origin(loc: str, origins: dict[str, str], source: str) -> str:
    for key, item in origins.items():
        if loc == key or loc.startswith(key + ".") or key.startswith(loc + "."):
            return f"--set {item}"
    return source


def validate_config(data: dict, source: str, origins: dict[str, str] | None = None) -> RunConfig:
    try:
        return RunConfig.model_validate(data)
    except ValidationError as exc:
        lines = []
        for err in exc.errors():
            loc = ".".join(str(p) for p in err["loc"]) or "(top level)"
            lines.append(f"  {loc}: {err['msg']} (from {_origin(loc, origins or {}, source)})")
        raise ConfigError("invalid config:\n" + "\n".join(lines)) from None


def preset_dir() -> Path:
    """The folder of the YAML presets, shipped as package data (the `pf1m.configs` package), so a
    wheel install has them as well as a checkout."""
    return Path(str(importlib.resources.files("pf1m.configs")))


def presets() -> dict[str, Path]:
    """The presets by name: `demo`, `paper`, ..."""
    return {p.stem: p for p in sorted(preset_dir().glob("*.yaml"))}


def config_path(name: str | Path) -> Path:
    """A config file: an existing path, else a preset's name (`paper`, `demo.yaml`)."""
    path = Path(name).expanduser()
    if path.is_file():
        return path.resolve()
    shipped = presets()
    preset = shipped.get(path.name.removesuffix(".yaml")) if path.name == str(name) else None
    if preset is None:
        names = ", ".join(shipped)
        raise ConfigError(f"{name}: cannot read config (no such file, nor a preset: {names})")
    return preset


def load_config(path: str | Path, overrides: list[str] | None = None) -> RunConfig:
    """`path`: a YAML file or a preset's name (see `presets`)."""
    path = config_path(path)
    data = _read_yaml(path)
    origins = apply_overrides(data, overrides or [])
    return validate_config(data, str(path), origins)
