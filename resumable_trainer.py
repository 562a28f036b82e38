"""What every trainer of the five scripts adds to transformers' checkpoints, so that a stopped run resumes exactly:

- a multi-process CPU run can load its optimizer state back (a transformers 4.57 bug, worked around here);
- a resumed run draws the same random numbers as an uninterrupted one, also where the data collator draws them
  (run_mlm.py's masking);
- under DeepSpeed ZeRO-3 an adapter trainer saves the whole adapter and head, not each process's empty shard.

trainer_qa.py, trainer_seq2seq_qa.py and utils_lm.py build their trainers on ResumableTrainerMixin."""
import os
import random
from unittest import mock

import numpy as np
import torch
from transformers.integrations.deepspeed import is_deepspeed_zero3_enabled
from transformers.trainer import safe_globals


# The optimizer state on a multi-process CPU run -----------------------------------------------------------------------


def is_numbered_cpu(device) -> bool:
    """torch.device("cpu", N): accelerate gives each process of a multi-process CPU run such a device."""
    return isinstance(device, torch.device) and device.type == "cpu" and device.index is not None


def torch_load_on_cpu(device):
    """A patch of torch.load that loads onto "cpu" where the caller asks for `device` (a numbered CPU).

    transformers 4.57 (Trainer._load_optimizer_and_scheduler) loads the optimizer state with
    `map_location=self.args.device` when world_size > 1; on a multi-process CPU run that device is torch.device("cpu",
    0), and torch.load refuses it: "don't know how to restore data location of torch.storage.UntypedStorage (tagged
    with cpu:0)". Every resume of such a run failed there. "cpu" is the same memory."""
    plain_load = torch.load

    def load(*args, **kwargs):
        if kwargs.get("map_location") == device:
            kwargs["map_location"] = "cpu"
        return plain_load(*args, **kwargs)

    return mock.patch.object(torch, "load", load)


# The random state at the batch a checkpoint resumes with --------------------------------------------------------------

BEFORE_PREFETCH = "before_prefetched_batch"  # the key of that state in transformers' rng_state*.pth


def host_rng_state() -> dict:
    """The random states a data collator may draw from (Python's, NumPy's, torch's CPU generator)."""
    return {"python": random.getstate(), "numpy": np.random.get_state(), "cpu": torch.random.get_rng_state()}


def set_host_rng_state(state: dict):
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.random.set_rng_state(state["cpu"])


class RecordingCollator:
    """The training data collator, recording the random state before each batch it makes, and setting the states
    queued in `states_to_set` (one per batch) before the next batches."""

    def __init__(self, collator):
        self.collator = collator
        self.state_before_last_batch = None
        self.states_to_set = []

    def __call__(self, features):
        if self.states_to_set:
            set_host_rng_state(self.states_to_set.pop(0))
        self.state_before_last_batch = host_rng_state()
        return self.collator(features)


class ResumableTrainerMixin:
    """Put first among a Trainer subclass's bases (before AdapterTrainer, whose save it corrects under ZeRO-3).

    Resuming mid-epoch, transformers restores the checkpoint's random state after the first batch has been fetched;
    and accelerate's data loader fetches one batch ahead, so the batch a checkpoint resumes with was made BEFORE the
    checkpoint's last step ran. A collator that draws random numbers (masking) thus made different batches after a
    resume. Here each checkpoint also keeps the random state from before that prefetched batch was made, and the
    resumed run makes its first batch from it and its second (the prefetch) from the checkpoint's own state, as the
    uninterrupted run did. A checkpoint without that state (from elsewhere) resumes as transformers does."""

    _recording_collator = None
    _resume_checkpoint = None  # while resuming: the checkpoint, until its random state has been restored
    _rng_restored_from = None  # the checkpoint whose states the first two batches are made from

    # optimizer state --------------------------------------------------------------------------------------------------

    def _load_optimizer_and_scheduler(self, checkpoint):
        if self.args.world_size > 1 and is_numbered_cpu(self.args.device):
            with torch_load_on_cpu(self.args.device):
                return super()._load_optimizer_and_scheduler(checkpoint)
        return super()._load_optimizer_and_scheduler(checkpoint)

    # random state -----------------------------------------------------------------------------------------------------

    def train(self, resume_from_checkpoint=None, *args, **kwargs):
        self._resume_checkpoint = resume_from_checkpoint if isinstance(resume_from_checkpoint, str) else None
        try:
            return super().train(resume_from_checkpoint, *args, **kwargs)
        finally:
            self._resume_checkpoint = None

    def get_train_dataloader(self):
        collator = self.data_collator
        if self.args.dataloader_num_workers > 0:  # batches made in worker processes, seeded by torch
            return super().get_train_dataloader()
        self._recording_collator = self.data_collator = RecordingCollator(collator)
        try:
            return super().get_train_dataloader()
        finally:
            self.data_collator = collator

    def _rng_file(self, checkpoint):
        """The random states transformers saves with a checkpoint (after its last step), per process."""
        name = f"rng_state_{self.args.process_index}.pth" if self.args.world_size > 1 else "rng_state.pth"
        return os.path.join(checkpoint, name)

    def _save_rng_state(self, output_dir):
        super()._save_rng_state(output_dir)
        recorder = self._recording_collator
        if recorder is not None and recorder.state_before_last_batch is not None:  # added to transformers' file
            states = self._load_rng_file(self._rng_file(output_dir))
            states[BEFORE_PREFETCH] = recorder.state_before_last_batch
            torch.save(states, self._rng_file(output_dir))

    def get_batch_samples(self, epoch_iterator, num_batches, device):
        checkpoint, recorder = self._resume_checkpoint, self._recording_collator
        if checkpoint is not None and recorder is not None and not self.args.ignore_data_skip:
            # The first batch of a resumed training, and transformers has not restored the random state before
            # it: a resume mid-epoch (transformers restores it after this batch was fetched: see _load_rng_state).
            self._resume_checkpoint = None
            states = self._load_rng_file(self._rng_file(checkpoint)) or {}
            if BEFORE_PREFETCH in states:
                recorder.states_to_set = [states.pop(BEFORE_PREFETCH), states]
                self._rng_restored_from = checkpoint
        return super().get_batch_samples(epoch_iterator, num_batches, device)

    @staticmethod
    def _load_rng_file(path):
        if not os.path.isfile(path):
            return None
        with safe_globals():  # NumPy's state, as transformers loads it
            return torch.load(path)

    def _load_rng_state(self, checkpoint):
        self._resume_checkpoint = None  # restored before the first batch (a resume at an epoch's start)
        restored_from, self._rng_restored_from = self._rng_restored_from, None
        recorder = self._recording_collator
        if recorder is None or checkpoint is None or restored_from != checkpoint or recorder.states_to_set:
            if recorder is not None:
                recorder.states_to_set = []  # one batch left in the epoch: the checkpoint's state from here
            return super()._load_rng_state(checkpoint)
        # Both batches made from their states: keep the host's random state, restore the devices' (GPU dropout).
        host = host_rng_state()
        super()._load_rng_state(checkpoint)
        set_host_rng_state(host)

    # saving -----------------------------------------------------------------------------------------------------------

    def save_model(self, output_dir=None, _internal_call=False):
        """Under DeepSpeed ZeRO-3, AdapterTrainer._save writes the live parameters, each process's shard (empty
        tensors), not the state dict Trainer gathers: every process gathers the trainable ones, the main one writes."""
        from adapters import AdapterTrainer

        if not (isinstance(self, AdapterTrainer) and self.is_deepspeed_enabled and is_deepspeed_zero3_enabled()):
            return super().save_model(output_dir, _internal_call)
        import deepspeed

        trainable = [p for p in self.model.parameters() if p.requires_grad]
        with deepspeed.zero.GatheredParameters(trainable):
            if self.args.should_save:
                self._save(output_dir)
