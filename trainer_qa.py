# coding=utf-8
"""Trainer subclasses for question answering.

`evaluate()` and `predict()` run the prediction loop without metrics, map the raw model outputs back to answers in
the original examples (`post_process_function`), score them (`compute_metrics`), and prefix the metric keys with
`eval_` / `test_` exactly as the upstream adapters example does. The adapter variants save and load adapters
(plus the prediction head) instead of the whole model. The generative QA trainers (T5, BART) build on these, in
trainer_seq2seq_qa.py.
"""
import math
import time

import numpy as np
import torch
from adapters import AdapterTrainer
from transformers import Trainer
from transformers.integrations.deepspeed import is_deepspeed_zero3_enabled
from transformers.trainer_utils import PredictionOutput, speed_metrics


def as_float32(predictions):
    """Logits as float32 numpy arrays: fp16/bf16 outputs would otherwise reach JSON and numpy code in half precision."""
    if isinstance(predictions, (tuple, list)):
        return type(predictions)(as_float32(p) for p in predictions)
    if isinstance(predictions, np.ndarray) and np.issubdtype(predictions.dtype, np.floating):
        return predictions.astype(np.float32, copy=False)
    return predictions


def feature_lengths(dataset, column="input_ids"):
    """Length of each feature's `column` list, read from Arrow (None if that column is not a list)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    values = dataset.with_format("arrow")[column]
    if not (pa.types.is_list(values.type) or pa.types.is_large_list(values.type)):
        return None
    return pc.list_value_length(values).to_numpy(zero_copy_only=False)


def in_dataset_order(output, order):
    """The prediction loop's output (predictions and label ids, rows in `order`) with its rows back in dataset
    order; arrays, tuples and lists of them, and named tuples of per-feature lists (GeneratedAnswers) alike."""
    if order is None:
        return output
    inverse = np.argsort(order)

    def restore(values):
        if isinstance(values, np.ndarray) and values.ndim > 0 and len(values) == len(order):
            return values[inverse]
        if isinstance(values, tuple) and hasattr(values, "_fields"):  # a named tuple of per-feature values
            return type(values)(*(restore(v) for v in values))
        if isinstance(values, tuple):
            return tuple(restore(v) for v in values)
        if isinstance(values, list) and len(values) == len(order):
            return [values[i] for i in inverse]
        return values

    return output._replace(predictions=restore(output.predictions), label_ids=restore(output.label_ids))


class QuestionAnsweringTrainer(Trainer):
    def __init__(self, *args, eval_examples=None, post_process_function=None, **kwargs):
        super().__init__(*args, **kwargs)
        self.eval_examples = eval_examples
        self.post_process_function = post_process_function

    def evaluate(self, eval_dataset=None, eval_examples=None, ignore_keys=None, metric_key_prefix: str = "eval"):
        eval_dataset = self.eval_dataset if eval_dataset is None else eval_dataset
        eval_examples = self.eval_examples if eval_examples is None else eval_examples
        loop_dataset, order = self._length_sorted(eval_dataset)
        dataloader = self.get_eval_dataloader(loop_dataset)
        output = self._prediction_loop(dataloader, "Evaluation", ignore_keys, metric_key_prefix)
        output = in_dataset_order(output, order)

        metrics = output.metrics
        # The main process post-processes, writes the prediction files and scores, once; every process gets the
        # metrics (--load_best_model_at_end reads them on each process).
        if self.post_process_function is not None and self.compute_metrics is not None:
            metrics = self._on_main_process(
                lambda: self._score(
                    self.post_process_function(eval_examples, eval_dataset, output.predictions),
                    output.metrics,
                    metric_key_prefix,
                )
            )

        if self.args.should_log:
            self.log(metrics)
        self.control = self.callback_handler.on_evaluate(self.args, self.state, self.control, metrics)
        return metrics

    def predict(self, predict_dataset, predict_examples, ignore_keys=None, metric_key_prefix: str = "test"):
        loop_dataset, order = self._length_sorted(predict_dataset)
        dataloader = self.get_test_dataloader(loop_dataset)
        output = self._prediction_loop(dataloader, "Prediction", ignore_keys, metric_key_prefix)
        output = in_dataset_order(output, order)
        if self.post_process_function is None or self.compute_metrics is None:
            return output

        def post_process_and_score():
            predictions = self.post_process_function(predict_examples, predict_dataset, output.predictions, "predict")
            metrics = self._score(predictions, output.metrics, metric_key_prefix)
            return PredictionOutput(predictions=predictions.predictions, label_ids=predictions.label_ids, metrics=metrics)

        # Once, on the main process (which writes the prediction files); the others receive the result.
        return self._on_main_process(post_process_and_score)

    def _length_sorted(self, dataset):
        """(the dataset in the order the prediction loop should see it, that order or None).

        Dynamically padded features (--pad_to_max_length False) of different lengths are run longest first, so that
        each batch is padded to about its own length instead of to the longest feature that happens to be in it: less
        padding, faster evaluation. in_dataset_order() puts the predictions back in dataset order for
        post-processing. Features padded to one length, and datasets with labels (the loop's mean loss depends on
        how the features are batched), are left in order."""
        import datasets

        if not isinstance(dataset, datasets.Dataset) or len(dataset) < 2:
            return dataset, None
        name = "input_ids"
        if name not in dataset.column_names and getattr(self.processing_class, "model_input_names", None):
            name = self.processing_class.model_input_names[0]
        if name not in dataset.column_names or any(label in dataset.column_names for label in self.label_names):
            return dataset, None
        lengths = feature_lengths(dataset, name)
        if lengths is None or lengths.min() == lengths.max():
            return dataset, None
        order = np.argsort(-lengths, kind="stable")
        return dataset.select(order), order

    def _get_eval_sampler(self, eval_dataset):
        """In order: post-processing maps prediction i to feature i. (With --group_by_length, transformers 4.57 would
        sample evaluation features in random length groups, and every answer would go to the wrong question;
        _length_sorted() batches by length without that.)"""
        if self.args.group_by_length and not self.args.use_legacy_prediction_loop and eval_dataset is not None:
            return torch.utils.data.SequentialSampler(eval_dataset) if self.args.world_size <= 1 else None
        return super()._get_eval_sampler(eval_dataset)

    def _on_main_process(self, compute):
        """compute() on the main process only, its result sent to the other processes of a distributed run.

        Every process has gathered all the predictions (exactly one per feature: the loop drops the samples that
        the distributed sampler repeats to even out the last batch), so post-processing and scoring once on the main
        process gives the metrics of a single-process run; a process that post-processed too would write the same
        prediction files concurrently."""
        import torch.distributed as dist

        distributed = self.args.world_size > 1 and dist.is_available() and dist.is_initialized()
        result = compute() if self.is_world_process_zero() or not distributed else None
        if distributed:
            holder = [result]
            dist.broadcast_object_list(holder, src=0)
            result = holder[0]
        return result

    def _prediction_loop(self, dataloader, description, ignore_keys, metric_key_prefix):
        """The Trainer's loop with metrics switched off (they need the examples), plus speed metrics over features."""
        compute_metrics = self.compute_metrics
        self.compute_metrics = None
        loop = self.prediction_loop if self.args.use_legacy_prediction_loop else self.evaluation_loop
        start_time = time.time()
        try:
            output = loop(
                dataloader,
                description=description,
                # No point gathering the predictions if there are no metrics, otherwise we defer to
                # self.args.prediction_loss_only
                prediction_loss_only=True if compute_metrics is None else None,
                ignore_keys=ignore_keys,
                metric_key_prefix=metric_key_prefix,
            )
        finally:
            self.compute_metrics = compute_metrics
        for compile_time_key in ("jit_compilation_time", "model_preparation_time"):
            start_time += output.metrics.get(f"{metric_key_prefix}_{compile_time_key}", 0)
        total_batch_size = self.args.eval_batch_size * self.args.world_size
        output.metrics.update(
            speed_metrics(
                metric_key_prefix,
                start_time,
                num_samples=output.num_samples,
                num_steps=math.ceil(output.num_samples / total_batch_size),
            )
        )
        return output._replace(predictions=as_float32(output.predictions))

    def _score(self, eval_preds, loop_metrics, metric_key_prefix):
        """Metric values prefixed with `{prefix}_`, then the loop's own metrics. No references (a test file without
        answers) means no score: the predictions are still written."""
        metrics = {}
        if eval_preds.label_ids is not None:
            metrics = self.compute_metrics(eval_preds)
            for key in list(metrics.keys()):
                if not key.startswith(f"{metric_key_prefix}_"):
                    metrics[f"{metric_key_prefix}_{key}"] = metrics.pop(key)
        metrics.update(loop_metrics)
        return metrics


class GatheredAdapterSaveMixin:
    """Saves the adapter and head whole under DeepSpeed ZeRO-3, where each process holds only a shard of every
    parameter: AdapterTrainer._save writes the live parameters (not the state dict Trainer gathers), so without this
    the files held empty tensors. Gathering is a collective: every process enters it, the main one writes."""

    def save_model(self, output_dir=None, _internal_call=False):
        if not (self.is_deepspeed_enabled and is_deepspeed_zero3_enabled()):
            return super().save_model(output_dir, _internal_call)
        import deepspeed

        trainable = [p for p in self.model.parameters() if p.requires_grad]
        with deepspeed.zero.GatheredParameters(trainable):
            if self.args.should_save:
                self._save(output_dir)


class QuestionAnsweringAdapterTrainer(GatheredAdapterSaveMixin, QuestionAnsweringTrainer, AdapterTrainer):
    """Trains and saves only the adapter (and the QA head) while the pretrained weights stay frozen."""
