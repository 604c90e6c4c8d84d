"""The model-only training loop the benchmarks compare with: the ceiling a data pipeline can
reach (``bench_train.py``), and the speed of each precision (``bench_amp_cpu.py``,
``bench_gpu.py``). It runs the trainer's own step, so it measures what training does."""

from __future__ import annotations

import tempfile
import time
from dataclasses import replace

import torch

from medgraft.config.schema import TrainConfig
from medgraft.models.registry import DEFAULT_ENCODER, get_encoder
from medgraft.models.unet import Architecture, architecture, build_segmenter
from medgraft.training.trainer import Trainer

AMP_MODE = {None: "off", torch.float16: "fp16", torch.bfloat16: "bf16"}


def bare_trainer(
    classes: int,
    steps: int,
    autocast: torch.dtype | None,
    device: str,
    encoder: str = DEFAULT_ENCODER,
    channels_last: bool | None = None,
    arch: Architecture | None = None,
) -> Trainer:
    """A default trainer with a model (``arch``; default: ``encoder``'s 2.5D U-Net) and its
    optimisation built, and no data; ``channels_last`` not given: on CUDA only, as the GPU
    table before the cuda profiles measured (never for a 3D model)."""
    if channels_last is None:
        channels_last = device.startswith("cuda") and (arch is None or arch.dims == 2)
    config = TrainConfig(
        data="-", output=tempfile.mkdtemp(), device=device, amp=AMP_MODE[autocast],
        channels_last=channels_last, epochs=1, encoder=encoder,
    )  # fmt: skip
    trainer = Trainer(config)
    trainer.device, trainer.dtype = torch.device(device), autocast
    spec = get_encoder(encoder)
    arch = arch or architecture(spec, 3, classes)
    model = build_segmenter(arch, spec).to(device)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    trainer.model = trainer.training_model = trainer.parallel_model = model.train()
    trainer.build_optimisation(steps)
    return trainer


def model_only(
    batch_size: int,
    steps: int,
    shape: tuple[int, int],
    classes: int,
    autocast: torch.dtype | None = None,
    device: str = "cpu",
    encoder: str = DEFAULT_ENCODER,
    channels_last: bool | None = None,
) -> float:
    """Samples/s of the trainer's step (forward, loss, backward, clipping, optimiser and
    schedule) on in-memory tensors: the ceiling; with ``autocast``, under autocast to that
    dtype as ``--amp`` trains. On CUDA the tensors sit on the GPU and fp16 goes through the
    gradient scaler; the clock waits for the GPU to finish. ``encoder`` and ``channels_last``
    as for :func:`bare_trainer`."""
    trainer = bare_trainer(classes, steps + 2, autocast, device, encoder, channels_last)
    batch = {
        "image": torch.rand(batch_size, 3, *shape, device=device),
        "label": torch.randint(0, classes, (batch_size, 1, *shape), device=device),
    }
    cuda = device.startswith("cuda")
    for step in range(steps + 2):
        if step == 2:  # after warm-up
            if cuda:
                torch.cuda.synchronize()
            started = time.perf_counter()
        trainer.train_step(batch)
    if cuda:
        torch.cuda.synchronize()
    return steps * batch_size / (time.perf_counter() - started)


def volume_step_seconds(
    conversion: str,
    decoder_channels: tuple[int, ...],
    batch_size: int,
    patch: tuple[int, int, int],
    steps: int,
    classes: int = 3,
) -> list[float]:
    """Seconds of each of ``steps`` trainer steps (after two warm-up steps) of a 3D U-Net on
    one-channel in-memory volumes: the design's model cost, without data loading."""
    spec = get_encoder(DEFAULT_ENCODER)
    arch = replace(
        architecture(spec, 1, classes, conversion), decoder_channels=list(decoder_channels)
    )
    trainer = bare_trainer(classes, steps + 2, None, "cpu", arch=arch)
    batch = {
        "image": torch.rand(batch_size, 1, *patch),
        "label": torch.randint(0, classes, (batch_size, 1, *patch)),
    }
    seconds = []
    for step in range(steps + 2):
        started = time.perf_counter()
        trainer.train_step(batch)
        if step >= 2:
            seconds.append(time.perf_counter() - started)
    return seconds
