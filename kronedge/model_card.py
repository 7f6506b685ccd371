"""The README.md of a compressed artifact, rendered from its recipe (``kronedge.json``)."""

from __future__ import annotations

from .recipe import share_text

METHOD_TEXT = {
    "kronecker": "word embeddings, Q/K/V/O and both FFN maps are Kronecker products, initialised by the nearest "
                 "Kronecker product (SVD) of the teacher's weights; biases, LayerNorms, position/type embeddings, "
                 "pooler and classifier are copied from the teacher.",
    "dense-small": "a narrower, shallower dense BERT of the same size, sliced from the teacher (baseline).",
}


def _stages(recipe: dict) -> list[str]:
    cfg = recipe["compress_config"]
    stages = []
    general = recipe.get("general_student")
    if general:  # stage 1 was done once, elsewhere, and reused
        stages.append(f"1. general KD from the general student `{general['path']}` (key {general['key']}): "
                      f"{general['steps']} steps on {general['texts']:,} unlabelled texts ({general['corpus']}) "
                      f"against `{general['teacher']}`, made once by `kronedge distill-general` and reused")
    elif cfg["stage1"]:
        stages.append(f"1. general KD on {cfg['corpus'] or 'WikiText-2 (validation split)'}: "
                      f"{_cap(cfg['stage1_examples'])} text chunks, {cfg['stage1_epochs']} epoch(s) at least, "
                      f"lr {cfg['stage1_lr']}, losses: embedding MSE + attention-score MSE + hidden MSE")
    losses = (f", losses: all intermediate + logit KL (T={cfg['temperature']}) + cross-entropy"
              if cfg["stage2_kd"] else "")
    stages.append(f"{len(stages) + 1}. task {'KD' if cfg['stage2_kd'] else 'fine-tuning (labels only)'} on "
                  f"{recipe['task']} train: {_cap(cfg['stage2_examples'])} examples, {cfg['stage2_epochs']} "
                  f"epoch(s) at least, lr {cfg['stage2_lr']}{losses}")
    return stages


def _cap(limit) -> str:
    """A recipe's example limit: a cap, not a count (a smaller file gives fewer)."""
    return f"up to {limit:,}" if limit else "all"


def _warnings(recipe: dict) -> str:
    if not recipe.get("warnings"):
        return ""
    lines = "\n".join(f"> **Warning:** {w}" for w in recipe["warnings"])
    return f"\n{lines}\n"


# What a student kept of its teacher, when the recipe says ({"kept": n, "of": m}): one line each on the card.
KEPT_LINES = {
    "vocabulary": "- vocabulary: the word embedding keeps the rows of the {kept:,} tokens of the training text (of {of:,}); "
                  "every other token reads the row of its nearest kept token",
    "ffn_neurons": "- FFN: every layer keeps {kept:,} of the teacher's {of:,} neurons, those that carry most of its output "
                   "on the training text, as dense maps",
}


def _kept(recipe: dict) -> str:
    return "".join(line.format(**recipe[key]) + "\n" for key, line in KEPT_LINES.items() if recipe.get(key))


def model_card(recipe: dict) -> str:
    """README.md of an artifact: recipe, parameters, compression, teacher vs student metrics, warnings."""
    m = recipe["metrics"]
    primary = m["primary"]
    cfg = recipe["compress_config"]
    rows = "\n".join(f"| {k} | {m['teacher'].get(k, float('nan')):.4f} | {m['student'].get(k, float('nan')):.4f} |"
                     for k in m["student"])
    plan = f"preset {cfg['preset']}" if cfg["preset"] else f"target compression {cfg['compression']}x"
    retained = share_text(m["student"][primary], m["teacher"][primary])
    return f"""# KroneckerBERT student: {recipe['task']} ({recipe['compression']:.2f}x)

Compressed by kronedge from `{recipe['teacher']}` (fine-tuned teacher: `{recipe['teacher_finetuned']}`).
{_warnings(recipe)}
| | teacher | student |
|---|---|---|
| embedding + encoder params | {recipe['params_teacher']:,} | {recipe['params_student']:,} |
{rows}

Primary metric: **{primary}** on the {m['examples']} {recipe['task']} dev examples: student
{m['student'][primary]:.4f} vs teacher {m['teacher'][primary]:.4f} ({retained}); before
distillation (initialisation from the teacher only) the student scored {m['student_before_training'][primary]:.4f}.

## Recipe
- method: {cfg['method']}; plan: {plan}, rank {cfg['rank']}
- {METHOD_TEXT.get(cfg['method'], cfg['method'])}
{_kept(recipe)}{chr(10).join('- stage ' + s for s in _stages(recipe))}
- KD loss weights (1 unless listed): {cfg.get('loss_weights') or 'all 1'}
- training time: {recipe['training']['seconds']}; precision {recipe['training']['precision']}
- versions: {recipe['versions']}

Load it with `kronedge.artifact.load_artifact(DIR)`; score it with `kronedge eval DIR --task {recipe['task']}`.
"""
