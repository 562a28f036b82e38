"""Trainer subclasses for question answering: evaluate() and predict() turn the loop's raw outputs into answers
(`post_process_function`) and score them (`compute_metrics`) under `eval_` / `test_` keys, as the upstream adapters
example does; the adapter variant saves only the adapter and head; checkpoints save and resume through
resumable_trainer.ResumableTrainerMixin. trainer_seq2seq_qa.py builds on these."""
import math
import time

import datasets
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import torch
import torch.distributed as dist
from adapters import AdapterTrainer
from transformers import Trainer
from transformers.trainer_utils import PredictionOutput, speed_metrics

from resumable_trainer import ResumableTrainerMixin


def as_float32(predictions):
    """Logits as float32 numpy arrays: fp16/bf16 outputs would otherwise reach JSON and numpy code in half precision."""
    if isinstance(predictions, (tuple, list)):
        return type(predictions)(as_float32(p) for p in predictions)
    if isinstance(predictions, np.ndarray) and np.issubdtype(predictions.dtype, np.floating):
        return predictions.astype(np.float32, copy=False)
    return predictions


def in_dataset_order(output, order):
    """The loop's output (rows in `order`) back in dataset order: arrays, tuples, lists, GeneratedAnswers alike."""
    if order is None:
        return output
    inverse = np.argsort(order)

    def restore(values):
        if isinstance(values, np.ndarray) and values.ndim > 0 and len(values) == len(order):
            return values[inverse]
        if isinstance(values, tuple):  # a named tuple (of per-feature values) or a plain one
            return type(values)(*map(restore, values)) if hasattr(values, "_fields") else tuple(map(restore, values))
        if isinstance(values, list) and len(values) == len(order):
            return [values[i] for i in inverse]
        return values

    return output._replace(predictions=restore(output.predictions), label_ids=restore(output.label_ids))


class QuestionAnsweringTrainer(ResumableTrainerMixin, Trainer):
    def __init__(self, *args, eval_examples=None, post_process_function=None, **kwargs):
        super().__init__(*args, **kwargs)
        self.eval_examples, self.post_process_function = eval_examples, post_process_function

    def evaluate(self, eval_dataset=None, eval_examples=None, ignore_keys=None, metric_key_prefix: str = "eval"):
        eval_dataset = self.eval_dataset if eval_dataset is None else eval_dataset
        eval_examples = self.eval_examples if eval_examples is None else eval_examples
        loop_dataset, order = self._length_sorted(eval_dataset)
        loader = self.get_eval_dataloader(loop_dataset)
        output = in_dataset_order(self._prediction_loop(loader, "Evaluation", ignore_keys, metric_key_prefix), order)
        metrics = output.metrics
        if self.post_process_function is not None and self.compute_metrics is not None:
            # Every process gets the metrics: --load_best_model_at_end reads them on each process.
            metrics = self._on_main_process(
                lambda: self._score(eval_examples, eval_dataset, output, metric_key_prefix).metrics)
        if self.args.should_log:
            self.log(metrics)
        self.control = self.callback_handler.on_evaluate(self.args, self.state, self.control, metrics)
        return metrics

    def predict(self, predict_dataset, predict_examples, ignore_keys=None, metric_key_prefix: str = "test"):
        loop_dataset, order = self._length_sorted(predict_dataset)
        loader = self.get_test_dataloader(loop_dataset)
        output = in_dataset_order(self._prediction_loop(loader, "Prediction", ignore_keys, metric_key_prefix), order)
        if self.post_process_function is None or self.compute_metrics is None:
            return output
        return self._on_main_process(
            lambda: self._score(predict_examples, predict_dataset, output, metric_key_prefix, "predict"))

    def _length_sorted(self, dataset):
        """(the dataset in the order the loop should see it, that order or None): dynamically padded features run
        longest first, so that each batch is padded to about its own length. Features of one length, and datasets with
        labels (the loop's mean loss depends on how the features are batched), stay in order."""
        if not isinstance(dataset, datasets.Dataset) or len(dataset) < 2:
            return dataset, None
        input_names = getattr(self.processing_class, "model_input_names", None) or ["input_ids"]
        name = "input_ids" if "input_ids" in dataset.column_names else input_names[0]
        if name not in dataset.column_names or any(label in dataset.column_names for label in self.label_names):
            return dataset, None
        values = dataset.with_format("arrow")[name]
        if not (pa.types.is_list(values.type) or pa.types.is_large_list(values.type)):
            return dataset, None
        lengths = pc.list_value_length(values).to_numpy(zero_copy_only=False)
        if lengths.min() == lengths.max():
            return dataset, None
        order = np.argsort(-lengths, kind="stable")
        return dataset.select(order), order

    def _get_eval_sampler(self, eval_dataset):
        """In order: post-processing maps prediction i to feature i. (With --group_by_length, transformers 4.57 would
        sample evaluation features in random length groups; _length_sorted() batches by length without that.)"""
        if self.args.group_by_length and not self.args.use_legacy_prediction_loop and eval_dataset is not None:
            return torch.utils.data.SequentialSampler(eval_dataset) if self.args.world_size <= 1 else None
        return super()._get_eval_sampler(eval_dataset)

    def _on_main_process(self, compute):
        """compute() on the main process only (which writes the prediction files), its result sent to the others.
        Every process has gathered all the predictions, one per feature: the metrics are a single-process run's."""
        if not (self.args.world_size > 1 and dist.is_available() and dist.is_initialized()):
            return compute()
        holder = [compute() if self.is_world_process_zero() else None]
        dist.broadcast_object_list(holder, src=0)
        return holder[0]

    def _prediction_loop(self, dataloader, description, ignore_keys, metric_key_prefix):
        """The Trainer's loop with metrics switched off (they need the examples), plus speed metrics over features."""
        compute_metrics, self.compute_metrics = self.compute_metrics, None
        loop = self.prediction_loop if self.args.use_legacy_prediction_loop else self.evaluation_loop
        start_time = time.time()
        try:
            loss_only = True if compute_metrics is None else None  # no metrics: no point gathering the predictions
            output = loop(dataloader, description=description, prediction_loss_only=loss_only, ignore_keys=ignore_keys,
                          metric_key_prefix=metric_key_prefix)
        finally:
            self.compute_metrics = compute_metrics
        for compile_time_key in ("jit_compilation_time", "model_preparation_time"):
            start_time += output.metrics.get(f"{metric_key_prefix}_{compile_time_key}", 0)
        num_steps = math.ceil(output.num_samples / (self.args.eval_batch_size * self.args.world_size))
        output.metrics.update(speed_metrics(metric_key_prefix, start_time, output.num_samples, num_steps))
        return output._replace(predictions=as_float32(output.predictions))

    def _score(self, examples, dataset, output, metric_key_prefix, *stage):
        """PredictionOutput(answers, references, metrics prefixed with `{prefix}_` followed by the loop's own) of the
        post-processed `output`; no score without references (a test file without answers). `stage`: for predict()."""
        eval_preds = self.post_process_function(examples, dataset, output.predictions, *stage)
        metrics = {}
        if eval_preds.label_ids is not None:
            metrics = self.compute_metrics(eval_preds)
            for key in list(metrics.keys()):
                if not key.startswith(f"{metric_key_prefix}_"):
                    metrics[f"{metric_key_prefix}_{key}"] = metrics.pop(key)
        metrics.update(output.metrics)
        return PredictionOutput(eval_preds.predictions, eval_preds.label_ids, metrics)


class QuestionAnsweringAdapterTrainer(QuestionAnsweringTrainer, AdapterTrainer):
    """Trains and saves only the adapter (and the QA head) while the pretrained weights stay frozen."""
