"""Command-line options built from the config dataclasses: every default and help text is written once."""

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import pytest
import typer.main
from typer.testing import CliRunner

from kronedge.cli import app
from kronedge.commands.options import Cli, config_options, field_docs, zero_is_none
from kronedge.data.files import DataFiles
from kronedge.recipe import CompressConfig, default_teacher_config
from kronedge.training.config import TrainConfig

runner = CliRunner()
COMMANDS = typer.main.get_command(app).commands

# Every flag compress, finetune and eval took before the options were generated (README and scripts use them).
FLAGS_BEFORE = {
    "compress": "--teacher --task --train --validation --format --text-column --text-pair-column --label-column "
                "--problem-type --name --out --run-dir --compression --preset --rank --embedding-k --method --structure "
                "--allocation --calibration --no-calibration --layers --stage1 --no-stage1 --kd --no-kd --corpus "
                "--stage1-examples --stage1-epochs --stage1-lr --stage2-examples --stage2-epochs --stage2-lr "
                "--teacher-train-limit --batch-size --max-length --temperature --layer-map --loss-weights --seed "
                "--precision --time-budget --min-steps --patience --stage1-min-steps --teacher-check --no-teacher-check "
                "--min-retention --augment --unlabelled --data-dir --threads --resume --checkpoint-every --json",
    "finetune": "--task --train --validation --format --text-column --text-pair-column --label-column --problem-type "
                "--name --out --epochs --min-steps --patience --lr --batch-size --max-length --train-limit --seed "
                "--precision --data-dir --threads --resume --json",
    "distill-general": "--teacher --compression --preset --rank --embedding-k --structure --allocation "
                       "--embedding-share --calibration --no-calibration --layers --corpus --examples --max-length "
                       "--epochs --lr --batch-size --loss-weights --seed --precision --time-budget --min-steps --out "
                       "--cache-dir --threads --resume --checkpoint-every --json",
    "plan": "--preset --compression --rank --embedding-k --structure --allocation --max-flops-per-token "
            "--embedding-share --calibration --layers --seq-len --json",
    "kronize": "--out --preset --compression --rank --embedding-k --structure --allocation --max-flops-per-token "
               "--embedding-share --calibration --layers --num-labels --seed",
    "eval": "--task --data-dir --validation --format --text-column --text-pair-column --label-column --limit --json",
}


def _capture(monkeypatch, module, function: str, *positional: str) -> dict:
    """Replace ``module.function`` by a stub that records its arguments (positional ones under the names
    ``positional``, default: ``config``) in the returned dict and ends the command."""
    seen = {}
    names = positional or ("config",)

    def fake(*args, **kwargs):
        seen.update(dict(zip(names, args)), **kwargs)
        raise SystemExit(0)

    monkeypatch.setattr(module, function, fake)
    return seen


def _flags(command: str) -> set[str]:
    return {flag for p in COMMANDS[command].params for flag in p.opts + p.secondary_opts}


@pytest.mark.parametrize("command", sorted(FLAGS_BEFORE))
def test_every_earlier_flag_is_still_there(command):
    assert set(FLAGS_BEFORE[command].split()) <= _flags(command)


@dataclass
class Toy:
    """A config.

    Args:
        alpha: the first.
        beta / gamma: two at once (None: neither).
        delta: one thing. epsilon: another, on the same line
            and the next. None: off.

    Example:
        >>> Toy()
    """

    alpha: int = 1
    beta: float | None = None
    gamma: str = "g"
    delta: bool = True
    epsilon: int | None = 3
    zeta: str | None = field(default=None, metadata={"help": "From metadata; beats the docstring."})


def test_docstring_args_and_metadata_give_each_field_its_help():
    docs = field_docs(Toy)
    assert docs["alpha"] == "The first."
    assert docs["delta"] == "One thing."
    assert docs["epsilon"] == "Another, on the same line and the next. None: off."  # "None:" is prose, kept
    assert docs["zeta"] == "From metadata; beats the docstring."
    assert "beta" not in docs  # a shared entry only when asked for
    assert field_docs(Toy, grouped=True)["gamma"] == "Two at once (None: neither)."


def test_config_options_take_defaults_types_and_flags_from_the_fields():
    options = {o.field: o for o in config_options(Toy, cli={"delta": Cli(flag="--d/--no-d"), "epsilon": zero_is_none()})}
    assert set(options) == {"alpha", "beta", "gamma", "delta", "epsilon", "zeta"}  # a new field is a new option
    assert (options["alpha"].default, options["alpha"].annotation, options["alpha"].name) == (1, int, "alpha")
    assert options["beta"].annotation == Optional[float] and options["beta"].default is None
    assert options["delta"].name == "d" and options["delta"].flag == "--d/--no-d"
    assert options["epsilon"].default == 3 and options["epsilon"].to_field(0) is None
    assert options["epsilon"].help.endswith("None: off. (0: None)")


def test_every_compress_config_field_is_an_option_with_its_default_and_help():
    params = {p.name: p for p in COMMANDS["compress"].params}
    by_flag = {flag: p for p in params.values() for flag in p.opts}
    from_source = {"task", "data_dir", "source"}  # --task, --data-dir and the data files build the TaskSource
    renamed = {"stage2_kd": "--kd", "check_teacher": "--teacher-check", "time_budget_s": "--time-budget",
               "checkpoint_seconds": "--checkpoint-every"}
    config = CompressConfig()
    for f in dataclasses.fields(CompressConfig):
        flag = renamed.get(f.name, "--" + f.name.replace("_", "-")) if f.name != "source" else "--train"
        assert flag in by_flag, f"CompressConfig.{f.name} has no option {flag}"
        param = by_flag[flag]
        assert param.help and len(param.help) > 10, f"{flag} has no help"
        if f.name in from_source:
            continue
        value = getattr(config, f.name)
        if f.default == "auto":
            value = f.default  # resolved by __post_init__ (levers_apply); the option shows the rule's name
        if f.name == "loss_weights":
            value = ",".join(f"{k}={v:g}" for k, v in value.items())
        elif f.name == "compression":
            value = None  # shown in the help: --preset is the alternative
        elif f.name in ("stage1_examples", "stage2_examples", "min_steps", "stage1_min_steps", "patience"):
            value = value or 0
        assert param.default == value, (flag, param.default, value)


def test_finetune_options_are_the_teacher_recipe():
    params = {p.name: p for p in COMMANDS["finetune"].params}
    teacher = default_teacher_config()
    for f in dataclasses.fields(TrainConfig):
        name = {"time_budget_s": "time_budget", "checkpoint_seconds": "checkpoint_every"}.get(f.name, f.name)
        shown = params[name].default
        assert (shown or None if f.name in ("min_steps", "patience", "cooldown_epochs") else shown) == getattr(teacher, f.name), f.name
        assert params[name].help


def test_the_data_file_options_are_defined_once():
    every = [f.name for f in dataclasses.fields(DataFiles)]
    for command, names in {"compress": every, "finetune": every,
                           "eval": ("format", "text_column", "text_pair_column", "label_column")}.items():
        params = {p.name: p for p in COMMANDS[command].params}
        for name in names:
            param = params["file_format" if name == "format" else name]
            assert param.help.startswith(DataFiles.help(name)[:40]), (command, name)


def test_compress_options_reach_the_config(monkeypatch, tmp_path):
    import kronedge.compress

    seen = _capture(monkeypatch, kronedge.compress, "compress")
    result = runner.invoke(app, ["compress", "--teacher", "random:minilm", "--preset", "kb21", "--time-budget", "2",
                                 "--patience", "0", "--stage1-examples", "0", "--stage2-examples", "64",
                                 "--loss-weights", "attention=0.5,hidden=2", "--no-kd", "--no-teacher-check",
                                 "--checkpoint-every", "5", "--stage1-max-length", "32", "--max-epochs", "3",
                                 "--data-dir", str(tmp_path), "--out", str(tmp_path / "art"), "--threads", "1"])
    assert result.exit_code == 0, result.output
    config = seen["config"]
    assert (config.preset, config.compression, config.time_budget_s, config.patience) == ("kb21", None, 120.0, None)
    assert (config.stage1_examples, config.stage2_examples, config.stage2_kd, config.check_teacher) == (None, 64, False, False)
    assert config.loss_weights == {"attention": 0.5, "hidden": 2.0}
    assert (config.checkpoint_seconds, config.stage1_max_length, config.max_epochs) == (5.0, 32, 3)
    assert (config.data_dir, config.task, config.source) == (str(tmp_path), "sst2", None)
    assert (seen["out"], seen["threads"], seen["resume"]) == (Path(tmp_path / "art"), 1, False)
    assert seen["run_dir"] == Path("runs/compress-sst2")

    runner.invoke(app, ["compress"])
    assert seen["config"].compression == CompressConfig.compression and seen["config"].preset is None


def test_finetune_options_reach_the_train_config(monkeypatch):
    import kronedge.finetune

    seen = _capture(monkeypatch, kronedge.finetune, "finetune", "teacher", "source")
    result = runner.invoke(app, ["finetune", "random:minilm", "--task", "rte", "--lr", "1e-4", "--patience", "0",
                                 "--time-budget", "1.5", "--train-limit", "10"])
    assert result.exit_code == 0, result.output
    assert seen["config"] == default_teacher_config(lr=1e-4, patience=None, time_budget_s=90.0)
    assert (seen["teacher"], seen["source"].task, seen["train_limit"]) == ("random:minilm", "rte", 10)


def test_metric_reaches_the_data_files(monkeypatch, tmp_path):
    import kronedge.finetune

    train = tmp_path / "t.csv"
    train.write_text("text,label\na,x\nb,y\n")
    seen = _capture(monkeypatch, kronedge.finetune, "finetune", "teacher", "source")
    result = runner.invoke(app, ["finetune", "random:minilm", "--train", str(train), "--validation", str(train),
                                 "--metric", "f1_macro"])
    assert result.exit_code == 0, result.output
    assert seen["source"].files.metric == "f1_macro" and seen["source"].spec.primary_metric == "f1_macro"


def test_plan_and_kronize_show_kron_config_defaults():
    from kronedge.kron_config import KronConfig

    for command in ("plan", "kronize"):
        params = {p.name: p for p in COMMANDS[command].params}
        for f in dataclasses.fields(KronConfig):
            if f.name in ("role_shapes", "layer_shapes", "name"):
                continue  # a preset's, not the command line's
            assert params[f.name].default == f.default, (command, f.name)
            assert params[f.name].help, (command, f.name)


def test_distill_general_options_reach_the_general_config(monkeypatch, tmp_path):
    import kronedge.general
    from kronedge.general import GeneralConfig

    params = {p.name: p for p in COMMANDS["distill-general"].params}
    renamed = {"time_budget_s": "time_budget", "checkpoint_seconds": "checkpoint_every"}
    for f in dataclasses.fields(GeneralConfig):
        assert params[renamed.get(f.name, f.name)].help, f"GeneralConfig.{f.name} has no option with help"
    seen = _capture(monkeypatch, kronedge.general, "distill_general")
    result = runner.invoke(app, ["distill-general", "--teacher", "random:minilm", "--preset", "kb21", "--epochs", "0",
                                 "--examples", "50", "--time-budget", "3", "--loss-weights", "hidden=2",
                                 "--no-calibration", "--cache-dir", str(tmp_path), "--threads", "1"])
    assert result.exit_code == 0, result.output
    config = seen["config"]
    assert (config.preset, config.compression, config.epochs, config.examples) == ("kb21", None, None, 50)
    assert (config.time_budget_s, config.loss_weights, config.calibration) == (180.0, {"hidden": 2.0}, False)
    assert (seen["cache_dir"], seen["threads"], seen["out"]) == (tmp_path, 1, None)

    runner.invoke(app, ["distill-general"])
    assert seen["config"] == GeneralConfig()


def test_ffn_to_embedding_takes_a_share_or_auto_and_says_so_for_anything_else():
    result = CliRunner().invoke(app, ["compress", "--ffn-to-embedding", "half", "--out", "x"])
    assert result.exit_code == 1 and "--ffn-to-embedding is a share of the FFN's budget in [0, 1) or 'auto', got " \
        "'half'" in " ".join(result.output.split())
    param = {p.name: p for p in typer.main.get_command(app).commands["compress"].params}["ffn_to_embedding"]
    assert param.default == "auto"
