"""Inputs a user gets wrong: each is one line naming what to change, before any training or timing starts.

Every case here once ended in a traceback, a misleading message, or an error after the training had run.
"""

import pytest

import helpers


@pytest.mark.parametrize("command", [["compress"], ["finetune", "builtin:minilm", "--out", "t"],
                                     ["distill-general", "--out", "g"],
                                     ["kronize", "random:minilm", "--compression", "5", "--out", "k"]])
@pytest.mark.parametrize("seed", ["-1", str(2**32)])
def test_a_seed_numpy_cannot_take_is_refused_first(in_tmp, command, seed):
    assert "seed must be an integer from 0 to 2**32 - 1" in helpers.one_line_error([*command, "--seed", seed])
    assert not any(in_tmp.iterdir())  # nothing written: no run directory, no teacher


def test_bench_of_a_file_that_is_not_onnx(in_tmp):
    (in_tmp / "garbage.onnx").write_bytes(b"not a protobuf at all")
    assert "garbage.onnx is not an ONNX model" in helpers.one_line_error(["bench", "garbage.onnx"])


def test_bench_refuses_a_sequence_longer_than_the_position_table(informative_export_fp32):
    import json

    positions = json.loads((informative_export_fp32 / "config.json").read_text())["max_position_embeddings"]
    message = helpers.one_line_error(["bench", str(informative_export_fp32), "--seq", str(positions + 1)])
    assert f"--seq {positions + 1} is longer than the {positions} positions" in message


@pytest.mark.parametrize("flag", ["--max-length", "--stage1-max-length"])
def test_compress_refuses_a_length_longer_than_the_teachers_positions(in_tmp, flag):
    assert f"{flag} 100000 is longer than the 512 positions" in helpers.one_line_error(["compress", flag, "100000"])


def test_a_missing_corpus_is_refused_before_the_teacher_is_fine_tuned(in_tmp):
    message = helpers.one_line_error(["compress", "--corpus", "nope.txt"])
    assert "corpus file nope.txt not found" in message
    assert not (in_tmp / "runs").exists()


def test_distill_general_refuses_a_file_as_out_before_training(in_tmp):
    (in_tmp / "good.csv").write_text("text,label\n")
    assert "good.csv is a file, not an output directory" in helpers.one_line_error(["distill-general", "--out", "good.csv"])


def test_kronize_refuses_a_head_without_labels(in_tmp):
    message = helpers.one_line_error(["kronize", helpers.tiny_spec(in_tmp), "--compression", "3", "--num-labels", "0",
                               "--out", "art"])
    assert "--num-labels must be >= 1" in message and not (in_tmp / "art").exists()


def test_eval_refuses_a_task_the_head_does_not_answer(in_tmp):
    from kronedge.pipeline import kronize_teacher
    from kronedge.planner import KronConfig

    kronize_teacher(helpers.tiny_spec(in_tmp), KronConfig(compression=3, structure="svd"), in_tmp / "art3",
                    num_labels=3)
    assert "art3's head has 3 output(s), but sst2 has 2 labels" in helpers.one_line_error(["eval", "art3", "--task", "sst2"])


def test_eval_refuses_a_task_with_other_labels_than_the_model_was_trained_for(in_tmp):
    import json

    from kronedge.pipeline import kronize_teacher
    from kronedge.planner import KronConfig

    art = kronize_teacher(helpers.tiny_spec(in_tmp), KronConfig(compression=3, structure="svd"), in_tmp / "art")[0]
    recipe = json.loads((art / "kronedge.json").read_text())  # as compress records a user's file with neg/pos
    recipe["task_spec"] = {"name": "reviews", "label_names": ["neg", "pos"], "data_file": "reviews.csv"}
    (art / "kronedge.json").write_text(json.dumps(recipe))
    message = helpers.one_line_error(["eval", "art", "--task", "cola"])
    assert "answers ['neg', 'pos'], not cola's labels ['unacceptable', 'acceptable']" in message
    from exporters.export import export_model  # its export names the same labels, and ONNX Runtime scores it

    export_model(art, in_tmp / "exported", max_length=32, ort_format=False)
    message = helpers.one_line_error(["eval", "exported", "--task", "cola"])
    assert "answers ['neg', 'pos'], not cola's labels ['unacceptable', 'acceptable']" in message


def test_a_local_path_that_is_no_model_says_what_it_is(in_tmp, informative_export_fp32):
    assert "no teacher given" in helpers.one_line_error(["plan", ""])
    (in_tmp / "good.csv").write_text("text,label\n")
    assert "good.csv is a file, not a saved model" in helpers.one_line_error(["plan", "good.csv"])
    (in_tmp / "cfgonly").mkdir()
    (in_tmp / "cfgonly" / "config.json").write_text("{}")
    assert "cannot load the saved model in cfgonly" in helpers.one_line_error(["plan", "cfgonly"])
    message = helpers.one_line_error(["export", str(informative_export_fp32), "--out", "again"])
    assert "is an exported ONNX model: give the kronedge artifact it was exported from" in message


def test_small_mistakes_name_the_fix(in_tmp):
    assert "--allocation must be one of uniform, global, across-roles, got 'nope'" in helpers.one_line_error(
        ["plan", "random:minilm", "--compression", "5", "--allocation", "nope"])
    assert "--seq-len 100000 is longer than the 512 positions" in helpers.one_line_error(
        ["plan", "random:minilm", "--compression", "5", "--seq-len", "100000"])
    (in_tmp / "tabs.csv").write_text("text\tlabel\nfine film\tpos\ndull film\tneg\n")
    message = helpers.one_line_error(["compress", "--train", "tabs.csv", "--validation", "tabs.csv"])
    assert "its header holds tabs: pass --format tsv" in message


def test_serve_names_a_token_file_it_cannot_read(informative_export_fp32, in_tmp):
    message = helpers.one_line_error(["serve", str(informative_export_fp32), "--token-file", "nope.txt"])
    assert "cannot read the token file nope.txt" in message
