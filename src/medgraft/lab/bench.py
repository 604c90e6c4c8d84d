"""The model-only training loop the benchmarks compare with: the ceiling a data pipeline can
reach (``bench_train.py``), and the speed of each precision (``bench_amp_cpu.py``,
``bench_gpu.py``)."""

from __future__ import annotations

import time

import torch
from monai.losses import DiceCELoss

from medgraft.models.registry import DEFAULT_ENCODER, get_encoder
from medgraft.models.unet import architecture, build_segmenter


def model_only(
    batch_size: int,
    steps: int,
    shape: tuple[int, int],
    classes: int,
    autocast: torch.dtype | None = None,
    device: str = "cpu",
) -> float:
    """Samples/s of forward + backward + step on in-memory tensors (the ceiling); with
    ``autocast``, under autocast to that dtype as ``--amp`` trains. On CUDA the tensors sit on
    the GPU, the model is channels_last and fp16 goes through a gradient scaler, as the
    trainer does there; the clock waits for the GPU to finish."""
    spec = get_encoder(DEFAULT_ENCODER)
    model = build_segmenter(architecture(spec, 3, classes), spec).train().to(device)
    cuda = device.startswith("cuda")
    if cuda:
        model = model.to(memory_format=torch.channels_last)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    scaler = torch.amp.GradScaler(device, enabled=autocast == torch.float16)
    loss_fn = DiceCELoss(to_onehot_y=True, softmax=True)
    images = torch.rand(batch_size, 3, *shape, device=device)
    if cuda:
        images = images.contiguous(memory_format=torch.channels_last)
    labels = torch.randint(0, classes, (batch_size, 1, *shape), device=device)
    for step in range(steps + 2):
        if step == 2:  # after warm-up
            if cuda:
                torch.cuda.synchronize()
            started = time.perf_counter()
        with torch.autocast(
            torch.device(device).type, dtype=autocast or torch.float32, enabled=bool(autocast)
        ):
            loss = loss_fn(model(images), labels)  # as the trainer's step does
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.unscale_(optimizer)
        torch.nn.utils.clip_grad_norm_(model.parameters(), 12.0)
        scaler.step(optimizer)
        scaler.update()
    if cuda:
        torch.cuda.synchronize()
    return steps * batch_size / (time.perf_counter() - started)
