"""Datasets as users bring them (JSONL, JSON, CSV, Parquet, save_to_disk, a cached hub id,
columns named otherwise), and which tokens carry loss in each format."""

from __future__ import annotations

import json

import datasets
import pytest
from optuna.trial import TrialState
from test_bad_input import assert_one_line_error

from conftest import cli_env, tunefleet
from spaces.dataset import read_dataset
from spaces.errors import InputError
from workers.data import IGNORE, encode

ROWS = [{"prompt": f"def f{i}():", "completion": f"Return {i}."} for i in range(6)]
CHATML = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n"
          "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")
CHATS = [{"conv": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": f"What is f{i}?"},
                   {"role": "assistant", "content": f"It returns {i}."}, {"role": "user", "content": "Sure?"},
                   {"role": "assistant", "content": "Yes."}], "id": i} for i in range(12)]


def test_every_source_reads_the_same_examples(tmp_path):
    (tmp_path / "d.jsonl").write_text("".join(json.dumps(r) + "\n" for r in ROWS))
    (tmp_path / "d.json").write_text(json.dumps(ROWS))
    table = datasets.Dataset.from_list(ROWS)
    table.to_csv(tmp_path / "d.csv", index=False)
    table.to_parquet(tmp_path / "d.parquet")
    datasets.DatasetDict({"train": table, "validation": table.select(range(2))}).save_to_disk(tmp_path / "saved")
    commit = "0123456789abcdef0123456789abcdef01234567"
    hub = tmp_path / "hub" / "datasets--org--docs"
    (hub / "snapshots" / commit / "data").mkdir(parents=True)
    table.to_parquet(hub / "snapshots" / commit / "data" / "train-00000-of-00001.parquet")
    (hub / "refs").mkdir()
    (hub / "refs" / "main").write_text(commit)
    for source in ("d.jsonl", "d.json", "d.csv", "d.parquet", "saved"):
        assert read_dataset(tmp_path / source) == ("prompt_completion", ROWS), source
    assert read_dataset(tmp_path / "saved", "validation") == ("prompt_completion", ROWS[:2])

    import huggingface_hub.constants as hf

    hf.HF_HUB_CACHE, cache = str(tmp_path / "hub"), hf.HF_HUB_CACHE  # read at import: set it for this test
    try:
        assert read_dataset("org/docs") == ("prompt_completion", ROWS)
        with pytest.raises(InputError, match="hf download org/absent --repo-type dataset"):
            read_dataset("org/absent")
    finally:
        hf.HF_HUB_CACHE = cache


def test_columns_splits_and_rows_named_in_errors(tmp_path):
    renamed = [{"question": r["prompt"], "answer": r["completion"], "extra": 1} for r in ROWS]
    datasets.Dataset.from_list(renamed).to_csv(tmp_path / "qa.csv", index=False)
    assert read_dataset(tmp_path / "qa.csv", columns={"prompt": "question", "completion": "answer"}) == \
        ("prompt_completion", ROWS)
    with pytest.raises(InputError, match=r"qa.csv, row 1: no column 'query'"):
        read_dataset(tmp_path / "qa.csv", columns={"prompt": "query", "completion": "answer"})
    with pytest.raises(InputError, match=r"row 1: expected a 'text'.*found 'question', 'answer', 'extra'"):
        read_dataset(tmp_path / "qa.csv")
    bad = ROWS[:3] + [{"prompt": "", "completion": ""}]
    datasets.Dataset.from_list(bad).to_parquet(tmp_path / "bad.parquet")
    with pytest.raises(InputError, match=r"bad.parquet, row 4: the example is empty"):
        read_dataset(tmp_path / "bad.parquet")
    datasets.DatasetDict({"a": datasets.Dataset.from_list(ROWS), "b": datasets.Dataset.from_list(ROWS)}
                         ).save_to_disk(tmp_path / "two")
    with pytest.raises(InputError, match="several splits .it has a, b; choose with --dataset-split"):
        read_dataset(tmp_path / "two")
    with pytest.raises(InputError, match="no split 'test'"):
        read_dataset(tmp_path / "two", "test")
    (tmp_path / "d.txt").write_text("x")
    with pytest.raises(InputError, match="unknown file type '.txt'"):
        read_dataset(tmp_path / "d.txt")


def test_a_parquet_file_without_the_named_column_is_one_line(tiny, tmp_path):
    datasets.Dataset.from_list([{"body": r["completion"]} for r in ROWS]).to_parquet(tmp_path / "d.parquet")
    result = tunefleet("study", "create", "s", "--model", tiny[0], "--dataset", tmp_path / "d.parquet",
                       "--text-field", "content", "--method", "lora", "--storage", f"journal:{tmp_path / 'j.log'}",
                       cwd=tmp_path)
    assert_one_line_error(result, "d.parquet, row 1: no column 'content'", "'body'")
    assert tunefleet("study", "create", "s", "--model", tiny[0], "--dataset", tmp_path / "d.parquet",
                     "--text-field", "body", "--method", "lora", "--storage", f"journal:{tmp_path / 'j.log'}",
                     cwd=tmp_path).returncode == 0


def _labelled(example) -> list[int]:
    return [t for t, label in zip(example["input_ids"], example["labels"]) if label != IGNORE]


def test_which_tokens_carry_loss(tiny):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny[0])
    ids = lambda text: tok(text, add_special_tokens=False)["input_ids"]  # noqa: E731
    text = encode({"text": "Return the sum."}, "text", tok, 512)
    assert _labelled(text) == ids("Return the sum.") + [tok.eos_token_id], "every token but BOS, and EOS"
    assert text["input_ids"][0] == tok.bos_token_id
    pair = encode({"prompt": "def f():", "completion": " Return 1."}, "prompt_completion", tok, 512)
    assert _labelled(pair) == ids(" Return 1.") + [tok.eos_token_id], "the completion only"
    assert len(pair["labels"]) - len(_labelled(pair)) == 1 + len(ids("def f():"))

    tok.chat_template = CHATML
    messages = CHATS[0]["conv"]
    chat = encode({"messages": messages}, "messages", tok, 512)
    rendered = tok.apply_chat_template(messages, tokenize=False)
    assert chat["input_ids"] == ids(rendered), "the template places every special token"
    said = "".join(tok.decode(_labelled(chat)))
    assert said.replace(" ", "") == "Itreturns0.<|im_end|>\nYes.<|im_end|>\n".replace(" ", ""), said
    assert "What is" not in said and "Be brief" not in said and "assistant" not in said
    everything = encode({"messages": messages}, "messages", tok, 512, train_on="all")
    assert _labelled(everything) == everything["input_ids"]
    assert len(_labelled(encode({"messages": messages}, "messages", tok, 20))) < len(_labelled(chat)), "truncated"


def test_a_chat_dataset_from_disk_with_its_eval_split_through_the_cli(tiny, tmp_path):
    data = datasets.DatasetDict({"train": datasets.Dataset.from_list(CHATS),
                                 "validation": datasets.Dataset.from_list(CHATS[:3])})
    data.save_to_disk(tmp_path / "chats")
    (tmp_path / "chatml.jinja").write_text(CHATML)
    url, env = f"journal:{tmp_path / 'j.log'}", cli_env()
    args = ["study", "create", "chat", "--model", tiny[0], "--dataset", tmp_path / "chats", "--messages-field", "conv",
            "--eval-dataset", "validation", "--method", "lora", "--n-trials", 1, "--max-steps", 3, "--seq-len", 40,
            "--pruner", "none", "--storage", url]
    assert_one_line_error(tunefleet(*args, env=env, cwd=tmp_path), "no chat template", "--chat-template FILE")
    template = ["--chat-template", tmp_path / "chatml.jinja"]
    assert_one_line_error(tunefleet(*args, *template, env=env, cwd=tmp_path), "no assistant token within the first 40")
    args[args.index("--seq-len") + 1] = 256
    made = tunefleet(*args, *template, env=env, cwd=tmp_path)
    assert made.returncode == 0, made.stderr
    done = tunefleet("worker", "chat", "--storage", url, env=env, cwd=tmp_path)
    assert done.returncode == 0, done.stderr

    from search.study import load
    from storage import open_storage

    study, spec = load(open_storage(url), "chat")
    assert (spec.eval_dataset, spec.eval_split, spec.columns, spec.train_on) == \
        (str(tmp_path / "chats"), "validation", {"messages": "conv"}, "assistant")
    assert spec.n_examples == 12, "the whole train split trains: the eval examples come from validation"
    assert spec.chat_template == CHATML
    assert [t.state for t in study.get_trials()] == [TrialState.COMPLETE]


def test_packing_trains_the_same_run_without_padding(tiny, tmp_path):
    import math

    import optuna

    from search.spec import Detectors
    from search.study import space_of
    from workers.inputs import spec_from_inputs
    from spaces.space import suggest
    from storage import backend, open_storage
    from workers.train import Resident
    from workers.trial_run import train

    quiet = Detectors(divergence_ratio=1e30, divergence_rise=1e30, plateau_window=10**9)
    # Fixed params: dropout masks would follow the batch's shape, and a high sampled learning rate
    # turns the float-order differences of packed and padded batches into different runs.
    runs, params = {}, {"batch_size": 8, "lora_dropout": 0.0, "learning_rate": 5e-4, "lr_scheduler_type": "cosine",
                        "warmup_ratio": 0.0, "weight_decay": 0.0, "max_grad_norm": 1.0, "lora_r": 8,
                        "lora_alpha_ratio": 2}
    for packing in (False, True):
        spec = spec_from_inputs(tiny[0], tiny[1], "lora", max_steps=4, eval_steps=2, seq_len=48, pruner="none",
                                packing=packing, detectors=quiet)
        url = f"journal:{tmp_path / f'{packing}.log'}"
        study = optuna.create_study(storage=open_storage(url))
        study.enqueue_trial(params)
        trial = study.ask()
        params = suggest(trial, space_of(spec))  # the second run trains the first one's params
        runs[packing] = train(trial, params, spec, Resident(spec),
                              backend(url).artifacts(open_storage(url)),
                              tmp_path / str(packing), should_stop=lambda: False)
    plain, packed = runs[False], runs[True]
    # Outside the Trainer too (the LR range test's loop): a packed example attends only to itself.
    import torch

    from workers.train import TrialData, load_base

    data, base = TrialData(spec), load_base(spec).eval()
    first, second = data.train[:2]
    row = data.collator([first, second])
    with torch.no_grad():
        packed_logits = base(input_ids=row["input_ids"], position_ids=row["position_ids"]).logits[0]
        alone = base(input_ids=torch.tensor([second["input_ids"]])).logits[0]
    assert torch.allclose(packed_logits[len(first["input_ids"]):], alone, atol=1e-4)
    assert packed.cost["tokens"] == plain.cost["tokens"] > 0, "the same tokens, and no padding counted"
    assert sorted(packed.callback.eval_losses) == [2, 4]
    for step, loss in plain.callback.eval_losses.items():
        assert math.isclose(packed.callback.eval_losses[step], loss, rel_tol=1e-4), (step, loss)
