# coding=utf-8
"""Trainer subclasses for question answering.

`evaluate()` and `predict()` run the prediction loop without metrics, map the raw model outputs back to answers in
the original examples (`post_process_function`), score them (`compute_metrics`), and prefix the metric keys with
`eval_` / `test_` exactly as the reference adapters example does. The adapter variants save and load adapters
(plus the prediction head) instead of the whole model.
"""
import math
import time

import numpy as np
from transformers import Trainer
from transformers.trainer_utils import PredictionOutput, speed_metrics

from adapters import AdapterTrainer


def as_float32(predictions):
    """Logits as float32 numpy arrays: fp16/bf16 outputs would otherwise reach JSON and numpy code in half precision."""
    if isinstance(predictions, (tuple, list)):
        return type(predictions)(as_float32(p) for p in predictions)
    if isinstance(predictions, np.ndarray) and np.issubdtype(predictions.dtype, np.floating):
        return predictions.astype(np.float32, copy=False)
    return predictions


class QuestionAnsweringTrainer(Trainer):
    def __init__(self, *args, eval_examples=None, post_process_function=None, **kwargs):
        super().__init__(*args, **kwargs)
        self.eval_examples = eval_examples
        self.post_process_function = post_process_function

    def evaluate(self, eval_dataset=None, eval_examples=None, ignore_keys=None, metric_key_prefix: str = "eval"):
        eval_dataset = self.eval_dataset if eval_dataset is None else eval_dataset
        eval_examples = self.eval_examples if eval_examples is None else eval_examples
        dataloader = self.get_eval_dataloader(eval_dataset)
        output = self._prediction_loop(dataloader, "Evaluation", ignore_keys, metric_key_prefix)

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
        dataloader = self.get_test_dataloader(predict_dataset)
        output = self._prediction_loop(dataloader, "Prediction", ignore_keys, metric_key_prefix)
        if self.post_process_function is None or self.compute_metrics is None:
            return output

        def post_process_and_score():
            predictions = self.post_process_function(predict_examples, predict_dataset, output.predictions, "predict")
            metrics = self._score(predictions, output.metrics, metric_key_prefix)
            return PredictionOutput(predictions=predictions.predictions, label_ids=predictions.label_ids, metrics=metrics)

        # Once, on the main process (which writes the prediction files); the others receive the result.
        return self._on_main_process(post_process_and_score)

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


class QuestionAnsweringAdapterTrainer(QuestionAnsweringTrainer, AdapterTrainer):
    """Trains and saves only the adapter (and the QA head) while the pretrained weights stay frozen."""
