"""KroneckerBERT's distillation losses (Tahaei et al. 2022, section 3.2).

loss = w_emb * MSE(embedding outputs)
     + w_att * sum_layers MSE(pre-softmax attention scores QK^T / sqrt(d_head))
     + w_hid * sum_layers MSE(layer outputs)
     + w_log * logit loss (KL with temperature; MSE for regression)
     + w_sup * supervised loss (cross-entropy; MSE for regression)

HF BERT returns attention *probabilities*, not the scores before softmax, so :class:`ScoreCapture`
hooks the query and key projections and recomputes QK^T/sqrt(d) from their outputs. The hooks sit
on whatever module is at ``attention.self.query`` / ``.key``, so a dense nn.Linear, a
KroneckerLinear and a LowRankLinear all work, and the model's own forward is untouched.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .augment import NO_LABEL
from .training.config import TrainingError


@dataclass
class DistillConfig:
    """Weights of the distillation losses and the layer mapping.

    Args:
        embedding: weight of the embedding-output MSE.
        attention: weight of the summed per-layer MSE of pre-softmax attention scores.
        hidden: weight of the summed per-layer MSE of layer outputs.
        logits: weight of the logit loss (KL(teacher || student) at ``temperature``, times T^2;
            it has the gradients of the soft cross-entropy and is 0 when the two agree).
        supervised: weight of the loss on the gold labels.
        temperature: softening of both logit distributions.
        layer_map: "one-to-one" (same depth, the paper's setting) or "uniform" (student layer j
            learns from teacher layer (j+1)*L_t/L_s - 1, for a shallower student).

    Example:
        >>> DistillConfig.general()   # stage 1: intermediate losses only
        >>> DistillConfig.task()      # stage 2: every loss
    """

    embedding: float = 1.0
    attention: float = 1.0
    hidden: float = 1.0
    logits: float = 1.0
    supervised: float = 1.0
    temperature: float = 1.0
    layer_map: str = "one-to-one"

    def __post_init__(self):
        weights = {k: getattr(self, k) for k in ("embedding", "attention", "hidden", "logits", "supervised")}
        bad = {k: v for k, v in weights.items() if not (isinstance(v, (int, float)) and v >= 0 and math.isfinite(v))}
        if bad:
            raise TrainingError(f"loss weights must be finite and >= 0, got {bad}")
        if not any(weights.values()):
            raise TrainingError("every loss weight is 0: nothing to train; set at least one (e.g. supervised=1)")
        if not self.temperature > 0:
            raise TrainingError(f"temperature must be > 0, got {self.temperature}")
        if self.layer_map not in ("one-to-one", "uniform"):
            raise TrainingError(f"layer_map must be 'one-to-one' or 'uniform', not {self.layer_map!r}")

    @classmethod
    def general(cls, **kw) -> "DistillConfig":
        """Stage 1 (general KD on unlabelled text): embedding, attention and hidden losses."""
        return cls(**{"logits": 0.0, "supervised": 0.0, **kw})

    @classmethod
    def task(cls, **kw) -> "DistillConfig":
        """Stage 2 (task KD): all losses."""
        return cls(**kw)

    @classmethod
    def no_kd(cls, **kw) -> "DistillConfig":
        """Plain fine-tuning: the supervised loss only (the no-KD ablation)."""
        return cls(**{"embedding": 0.0, "attention": 0.0, "hidden": 0.0, "logits": 0.0, **kw})

    @property
    def needs_intermediate(self) -> bool:
        return bool(self.embedding or self.attention or self.hidden)

    @property
    def needs_teacher(self) -> bool:
        return bool(self.needs_intermediate or self.logits)

    def to_dict(self) -> dict:
        return asdict(self)


def bert_of(model: nn.Module) -> nn.Module:
    """The BertModel inside a task model (or the model itself), through DDP-style ``.module`` wrappers."""
    model = getattr(model, "module", model)
    return getattr(model, "bert", model)


def layer_mapping(student_layers: int, teacher_layers: int, mode: str = "one-to-one") -> list[int]:
    """Teacher layer index for every student layer.

    Example:
        >>> layer_mapping(3, 6, "uniform")
        [1, 3, 5]
    """
    if mode == "one-to-one":
        if student_layers != teacher_layers:
            raise TrainingError(f"one-to-one mapping needs equal depth; the student has {student_layers} layers and "
                             f"the teacher {teacher_layers}: use layer_map='uniform'")
        return list(range(student_layers))
    if student_layers > teacher_layers:
        raise TrainingError(f"a uniform mapping needs a student no deeper than the teacher ({student_layers} > {teacher_layers})")
    return [(j + 1) * teacher_layers // student_layers - 1 for j in range(student_layers)]


class ScoreCapture:
    """Context manager recording every layer's pre-softmax attention scores.

    Example:
        >>> with ScoreCapture(model) as cap:
        ...     model(**batch)
        >>> cap.scores(0).shape   # (B, heads, T, T)
    """

    def __init__(self, model: nn.Module, layers: list[int] | None = None):
        self.encoder_layers = bert_of(model).encoder.layer
        self.layers = list(range(len(self.encoder_layers))) if layers is None else layers
        self.q: dict[int, torch.Tensor] = {}
        self.k: dict[int, torch.Tensor] = {}
        self.handles = []

    def __enter__(self) -> "ScoreCapture":
        for i in self.layers:
            attn = self.encoder_layers[i].attention.self
            self.handles.append(attn.query.register_forward_hook(self._hook(self.q, i)))
            self.handles.append(attn.key.register_forward_hook(self._hook(self.k, i)))
        return self

    def __exit__(self, *exc) -> None:
        for h in self.handles:
            h.remove()
        self.handles.clear()

    @staticmethod
    def _hook(store, i):
        def hook(module, inputs, output):
            store[i] = output

        return hook

    def scores(self, i: int) -> torch.Tensor:
        """QK^T / sqrt(d_head) of layer i, (B, heads, T, T), before the mask and softmax."""
        attn = self.encoder_layers[i].attention.self
        h, d = attn.num_attention_heads, attn.attention_head_size
        q, k = self.q[i], self.k[i]
        B, T, _ = q.shape
        q = q.view(B, T, h, d).transpose(1, 2)  # (B, h, T, d)
        k = k.view(B, T, h, d).transpose(1, 2)
        return (q @ k.transpose(-1, -2)) / math.sqrt(d)


def masked_mse(student: torch.Tensor, teacher: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean squared error over the positions where ``mask`` (broadcastable) is 1."""
    diff = (student.float() - teacher.float()) ** 2
    mask = mask.to(diff.dtype).expand_as(diff)
    return (diff * mask).sum() / mask.sum().clamp_min(1.0)


def logit_loss(student: torch.Tensor, teacher: torch.Tensor, temperature: float, regression: bool) -> torch.Tensor:
    """KL(softmax(t/T) || softmax(s/T)) * T^2 (batch mean), or MSE for a regression head."""
    if regression:
        return F.mse_loss(student.float(), teacher.float())
    t = F.log_softmax(teacher.float() / temperature, dim=-1)
    s = F.log_softmax(student.float() / temperature, dim=-1)
    return F.kl_div(s, t, log_target=True, reduction="batchmean") * temperature**2


def supervised_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Cross-entropy (MSE for regression) over the rows with a gold label.

    Teacher-labelled inputs (:mod:`.augment`) carry NO_LABEL (NaN for regression) and do not count;
    a batch of only those gives 0 (their targets are the teacher's, through the KD losses).
    """
    if logits.shape[-1] == 1:
        keep = ~torch.isnan(labels)
        pred = logits.float().squeeze(-1)
        return F.mse_loss(pred[keep], labels.float()[keep]) if keep.any() else pred.sum() * 0.0
    if not (labels != NO_LABEL).any():
        return logits.float().sum() * 0.0
    return F.cross_entropy(logits.float(), labels, ignore_index=NO_LABEL)


class Distiller(nn.Module):
    """Computes the weighted distillation loss of a student against a frozen teacher.

    When the student is narrower than the teacher (a dense-small baseline), a learned linear map
    lifts its hidden states to the teacher's width (TinyBERT's W_h); it is trained with the student
    and discarded afterwards. When head counts differ, attention scores are compared head-averaged.

    Args:
        teacher: frozen teacher (same tokenizer); a task model when logits are distilled.
        student: the model being trained.
        config: loss weights and layer mapping.

    Example:
        >>> distiller = Distiller(teacher, student, DistillConfig.task())
        >>> loss, parts = distiller(student, batch)
    """

    def __init__(self, teacher: nn.Module, student: nn.Module, config: DistillConfig):
        super().__init__()
        self.teacher = [teacher]  # a list keeps the teacher out of parameters() and state_dict()
        self.config = config
        ts, ss = bert_of(teacher).config, bert_of(student).config
        self.mapping = layer_mapping(ss.num_hidden_layers, ts.num_hidden_layers, config.layer_map)
        self.same_heads = ss.num_attention_heads == ts.num_attention_heads
        self.project = (nn.Linear(ss.hidden_size, ts.hidden_size, bias=False)
                        if ss.hidden_size != ts.hidden_size else nn.Identity())
        if config.logits and not hasattr(teacher, "classifier"):
            raise TrainingError("logit distillation needs a teacher with a classification head; "
                             "fine-tune it first (kronedge finetune) or set logits=0")
        if not self.same_heads and config.attention:
            warnings.warn(f"student has {ss.num_attention_heads} heads, teacher {ts.num_attention_heads}: "
                          "attention scores are compared averaged over heads", stacklevel=2)
        teacher.eval()
        for p in teacher.parameters():
            p.requires_grad_(False)

    def _run(self, model, batch, capture_layers, grad: bool):
        inputs = {k: v for k, v in batch.items() if k != "labels"}
        want_hidden = self.config.needs_intermediate
        with torch.set_grad_enabled(grad), ScoreCapture(model, capture_layers if self.config.attention else []) as cap:
            out = model(**inputs, output_hidden_states=want_hidden)
            scores = {i: cap.scores(i) for i in capture_layers} if self.config.attention else {}
        logits = getattr(out, "logits", None)
        hidden = out.hidden_states if want_hidden else None
        return logits, hidden, scores

    def forward(self, student: nn.Module, batch: dict) -> tuple[torch.Tensor, dict]:
        """(weighted total loss, {part: detached scalar tensor}) for one batch."""
        c = self.config
        teacher = self.teacher[0]
        device = batch["input_ids"].device
        if c.needs_teacher and next(teacher.parameters()).device != device:
            teacher.to(device)  # the training loop places the student; the frozen teacher follows it
        mask = batch["attention_mask"]
        s_logits, s_hidden, s_scores = self._run(student, batch, list(range(len(self.mapping))), grad=True)
        t_logits = t_hidden = None
        t_scores = {}
        if c.needs_teacher:
            t_logits, t_hidden, t_scores = self._run(teacher, batch, self.mapping, grad=False)

        parts: dict[str, torch.Tensor] = {}
        token_mask = mask[:, :, None]  # (B, T, 1)
        if c.embedding:
            parts["embedding"] = masked_mse(self.project(s_hidden[0]), t_hidden[0], token_mask)
        if c.hidden:
            parts["hidden"] = sum(masked_mse(self.project(s_hidden[j + 1]), t_hidden[t + 1], token_mask)
                                  for j, t in enumerate(self.mapping))
        if c.attention:
            pair_mask = (mask[:, None, :, None] * mask[:, None, None, :])  # (B, 1, T, T): valid query & key
            total = 0.0
            for j, t in enumerate(self.mapping):
                s, tt = s_scores[j], t_scores[t]
                if not self.same_heads:
                    s, tt = s.mean(1, keepdim=True), tt.mean(1, keepdim=True)
                total = total + masked_mse(s, tt, pair_mask)
            parts["attention"] = total
        if c.logits:
            regression = s_logits.shape[-1] == 1
            parts["logits"] = logit_loss(s_logits, t_logits, c.temperature, regression)
        if c.supervised and "labels" in batch:
            parts["supervised"] = supervised_loss(s_logits, batch["labels"])
        if not parts:
            raise ValueError("no loss applies to this batch (unlabelled data with only the supervised loss enabled)")
        weights = {"embedding": c.embedding, "hidden": c.hidden, "attention": c.attention,
                   "logits": c.logits, "supervised": c.supervised}
        loss = sum(weights[k] * v for k, v in parts.items())
        # Detached tensors, not floats: converting here would sync with the GPU on every step.
        return loss, {k: v.detach() for k, v in parts.items()}
