"""Sliding-window inference over one 3D volume: windows batched through a model, blended.

Where the windows go and how each is weighted is :mod:`runtime.inference.window_grid` (pure
geometry, re-exported here): windows spread evenly (nnU-Net style: first at 0, last flush with the
border), weighted by a Gaussian of sigma = patch / 8 whose tails are lifted to a small minimum so
no weight sum is ever 0. This module is the threaded blender that runs them.
Each forward runs a batch of fixed shape (the last batch is padded) so cuDNN autotuning and
``torch.compile`` see one shape only. Test-time transforms (flips, quarter turns, transposes) are
just more windows in the stream: each output is transformed back and added to the same fp32
accumulator. The next batch is built on a
thread only where that overlaps something (:func:`prefetch_pays`).

A binary mask at probability T needs no division: ``sum(w * logit) / sum(w) > ln(T / (1 - T))`` is
``sum(w * logit) > ln(T / (1 - T)) * sum(w)``, and at T = 0.5 the weight sum is not needed at all.

nnU-Net models blend as nnU-Net's predictor does (``BlendSettings(importance="nnunet",
padding="constant")``): its Gaussian map and zero padding of the normalized volume, so their masks
match nnU-Net's. A model with several softmax rivals to the foreground blends one channel per rival
(``channels``): blending is linear, so the blended channels are exactly the differences of nnU-Net's
blended logits, and the foreground probability is computed from them after blending.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import torch

from runtime.contract.errors import ModelError, VolumeError
from runtime.contract.tta import IDENTITY, Transform
from runtime.inference import tta
from runtime.inference.window_grid import (
    IMPORTANCE_MAPS,
    PADDINGS,
    Shape3,
    WindowPlan,
    gaussian_importance,
    logit_threshold,
    nnunet_importance,
    padded,
    plan_windows,
    window_starts,
)

# The geometry is re-exported: callers of the blender find the whole window API here.
__all__ = [
    "ACCUMULATIONS",
    "IMPORTANCE_MAPS",
    "OUTPUTS",
    "PADDINGS",
    "BlendSettings",
    "Blended",
    "NonFiniteOutput",
    "WindowPlan",
    "blend",
    "blend_volume",
    "blend_volume_with_probability",
    "choose_accumulation",
    "gaussian_importance",
    "logit_threshold",
    "nnunet_importance",
    "plan_windows",
    "prefetch_pays",
    "source_itemsize",
    "window_starts",
]

ACCUMULATIONS = ("device", "slab", "host")
OUTPUTS = ("mask", "logits", "mask+probability")  # what blend returns: see Blended
BatchForward = Callable[[torch.Tensor], torch.Tensor]


class NonFiniteOutput(ModelError):
    """The model returned NaN or inf for a volume: its mask would be silently wrong."""


@dataclass(frozen=True)
class BlendSettings:
    """How one volume is cut into windows, batched and blended."""

    patch: Shape3
    overlap: float = 0.5
    batch_size: int = 2
    transforms: tuple[Transform, ...] = (IDENTITY,)  # test-time transforms, the identity first
    threshold: float = 0.5
    normalization: tuple[float, float] = (0.0, 1.0)  # (mean, std) applied to raw voxels
    accumulate: str = "device"  # "device" (whole volume) | "slab" (z-slab on device) | "host"
    # Build the next batch on a thread while the current one runs; None: where it pays.
    prefetch: bool | None = None
    importance: str = "gaussian"  # "gaussian" (ours) | "nnunet" (nnU-Net's map, see above)
    padding: str = "reflect"  # "reflect" (the scan goes on) | "constant" (zeros, as nnU-Net)
    # A short last batch is padded to the fixed shape (cuDNN autotuning, compiled graphs and
    # static exported programs need it); False runs it at its true size (eager on the CPU).
    pad_last_batch: bool = True
    # Channels the forward returns: 1, the foreground log-odds; C > 1, the log-odds of the
    # foreground against each of C softmax rivals (combined after blending, see _Blender._emit).
    channels: int = 1


def prefetch_pays(compute: torch.device | str, accumulate: str) -> tuple[bool, str]:
    """Whether building the next window batch on a thread overlaps any work, and why.

    Only host-side window cutting beside a forward on another device overlaps. On the CPU the
    thread shares the forward's cores and can hide only its copies (a few percent of a forward
    at most, see ``bench/RESULTS.md``), so without a measurement it is off; the probe times it
    (:mod:`runtime.inference.probe`), since it also changes how the forward's OpenMP threads wait.
    """
    device = torch.device(compute)
    if device.type == "cpu":
        return False, (
            "the forward runs on the CPU: a window thread would compete with its threads for "
            "the same cores, to hide copies that take a few percent of a forward at most"
        )
    if accumulate != "host":
        return False, (
            f"windows are cut on {device.type} by kernels queued behind the forward, already "
            "overlapped with it"
        )
    return True, (
        f"windows are cut on the host, so a thread cuts the next batch while {device} computes"
    )


def blend_volume(
    volume: np.ndarray,
    forward: BatchForward,
    settings: BlendSettings,
    device: torch.device | str = "cpu",
    *,
    output: str = "mask",
) -> np.ndarray:
    """Run ``forward`` over every window of ``volume`` and blend the results.

    ``forward`` takes a normalized float32 batch ``(B, 1, *patch)`` on ``device`` and returns
    foreground logits of the same shape. Returns a uint8 0/1 mask (``output="mask"``) or the blended
    float32 logits (``output="logits"``), both the shape of ``volume``.
    """
    if output not in ("mask", "logits"):
        raise ValueError(f"output must be 'mask' or 'logits', got {output!r}")
    blended = blend(volume, forward, settings, device, output)
    return blended.mask if output == "mask" else blended.logits  # type: ignore[return-value]


@dataclass(frozen=True)
class Blended:
    """What one pass over a volume produced; arrays have the shape of the volume."""

    mask: np.ndarray | None  # uint8 0/1 at the settings' threshold
    probability: np.ndarray | None = None  # float32 foreground probability, sigmoid(blended logit)
    logits: np.ndarray | None = None  # float32 blended foreground logits


def blend_volume_with_probability(
    volume: np.ndarray,
    forward: BatchForward,
    settings: BlendSettings,
    device: torch.device | str = "cpu",
) -> Blended:
    """:func:`blend_volume`, keeping the blended foreground probability beside the mask.

    The mask is decided exactly as without the probability (the same comparison of weighted
    sums), so keeping probabilities never changes a submission.
    """
    return blend(volume, forward, settings, device, "mask+probability")


def blend(
    volume: np.ndarray,
    forward: BatchForward,
    settings: BlendSettings,
    device: torch.device | str,
    output: str,
    *,
    plan: WindowPlan | None = None,
) -> Blended:
    """:func:`blend_volume` for any of :data:`OUTPUTS`, as a :class:`Blended`.

    For a caller that picks the output at run time (the engine), so that it need not branch
    over the two wrappers and wrap their arrays again. ``plan`` replaces the volume's own window
    grid: a block of a larger volume passes the windows of the whole volume's grid that reach it,
    shifted to the block's corner (unpadded, in z-major order), so that every voxel of the block
    sums the same windows in the same order as the whole volume would (see runtime.scroll).
    """
    if output not in OUTPUTS:
        raise ValueError(f"output must be one of {OUTPUTS}, got {output!r}")
    if settings.accumulate not in ACCUMULATIONS:
        raise ValueError(f"accumulate must be one of {ACCUMULATIONS}, got {settings.accumulate!r}")
    if settings.batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {settings.batch_size}")
    if settings.importance not in IMPORTANCE_MAPS:
        raise ValueError(
            f"importance must be one of {IMPORTANCE_MAPS}, got {settings.importance!r}"
        )
    if settings.padding not in PADDINGS:
        raise ValueError(f"padding must be one of {PADDINGS}, got {settings.padding!r}")
    if settings.channels < 1:
        raise ValueError(f"channels must be at least 1, got {settings.channels}")
    if volume.ndim != 3:
        raise VolumeError(f"expected a 3D (Z, Y, X) volume, got shape {volume.shape}")
    compute = torch.device(device)
    if plan is None:
        plan = plan_windows(volume.shape, settings.patch, settings.overlap)
    elif plan.shape != volume.shape:
        raise ValueError(f"a window plan for {plan.shape} given for a {volume.shape} volume")
    with torch.inference_mode():
        return _Blender(volume, forward, settings, compute, plan, output).run()


class _Blender:
    """One volume's pass: owns the source tensor, batch buffers and the accumulator."""

    def __init__(
        self,
        volume: np.ndarray,
        forward: BatchForward,
        settings: BlendSettings,
        compute: torch.device,
        plan: WindowPlan,
        output: str,
    ) -> None:
        self.forward = forward
        self.settings = settings
        self.compute = compute
        self.plan = plan
        self.output = output
        on_host = settings.accumulate == "host" or compute.type == "cpu"
        self.store = torch.device("cpu") if on_host else compute
        source = torch.from_numpy(padded(_torch_compatible(volume), plan, settings.padding))
        # The volume is small next to fp32 accumulators (uint8: a quarter), so it goes to the
        # device once unless host accumulation was chosen to save device memory.
        self.source = source if on_host else source.to(compute)
        self.items = [
            (index, transform)
            for index in range(plan.n_windows)
            for transform in settings.transforms
        ]
        if settings.importance == "nnunet":
            self.weights = nnunet_importance(plan.patch, device=self.store)
        else:
            self.weights = gaussian_importance(plan.patch, device=self.store)
        cut = logit_threshold(settings.threshold)
        self.cut = cut * len(settings.transforms)
        # Several channels are combined non-linearly: only blended (divided) values combine.
        self.needs_weight_sum = output != "mask" or cut != 0.0 or settings.channels > 1
        # Window outputs are (Z, Y, X) for one channel and (C, Z, Y, X) for several.
        self.output_offset = 0 if settings.channels == 1 else 1
        self.mask = np.empty(plan.shape, dtype=np.uint8) if output != "logits" else None
        self.values = np.empty(plan.shape, dtype=np.float32) if output != "mask" else None
        depth = plan.patch[0] if settings.accumulate == "slab" else plan.padded_shape[0]
        self.accumulator = _Accumulator(
            plan.padded_shape,
            depth,
            self.store,
            self.needs_weight_sum,
            self._emit,
            settings.channels,
        )
        prefetch = settings.prefetch
        if prefetch is None:
            prefetch = prefetch_pays(compute, settings.accumulate)[0]
        self.prefetch = prefetch

    def run(self) -> Blended:
        size = self.settings.batch_size
        batches = [self.items[i : i + size] for i in range(0, len(self.items), size)]
        buffers = [self._new_buffer(), self._new_buffer()]
        checked = False
        if self.prefetch and len(batches) > 1:
            with ThreadPoolExecutor(1, thread_name_prefix="window-prefetch") as pool:
                pending: Future[torch.Tensor] = pool.submit(
                    self._assemble_in_thread, batches[0], buffers[0]
                )
                for number, batch in enumerate(batches):
                    ready = pending.result()
                    if number + 1 < len(batches):
                        # Double buffering: the other buffer's batch has finished its forward.
                        pending = pool.submit(
                            self._assemble_in_thread, batches[number + 1], buffers[(number + 1) % 2]
                        )
                    checked = self._run_batch(batch, ready, checked)
        else:
            for batch in batches:
                checked = self._run_batch(batch, self._assemble(batch, buffers[0]), checked)
        self.accumulator.finish()
        if self.output == "logits":
            return Blended(mask=None, logits=self.values)
        return Blended(mask=self.mask, probability=self.values)

    def _new_buffer(self) -> torch.Tensor:
        shape = (self.settings.batch_size, 1, *self.plan.patch)
        pin = self.source.device.type == "cpu" and self.compute.type == "cuda"
        return torch.zeros(shape, dtype=torch.float32, device=self.source.device, pin_memory=pin)

    def _assemble_in_thread(
        self, batch: list[tuple[int, Transform]], buffer: torch.Tensor
    ) -> torch.Tensor:
        # inference_mode is thread-local, and the buffers are inference tensors.
        with torch.inference_mode():
            return self._assemble(batch, buffer)

    def _assemble(self, batch: list[tuple[int, Transform]], buffer: torch.Tensor) -> torch.Tensor:
        pz, py, px = self.plan.patch
        mean, std = self.settings.normalization
        normalize = (mean, std) != (0.0, 1.0)
        # Integer voxels widen to float32 and shift in one pass, with the very values a copy
        # followed by a subtraction gives (float16 voxels would subtract in half precision).
        shift_while_copying = normalize and not self.source.is_floating_point()
        for slot, (index, transform) in enumerate(batch):
            z, y, x = self.plan.starts[index]
            window = self.source[z : z + pz, y : y + py, x : x + px]
            if not transform.is_identity:
                window = tta.apply(transform, window, 0)
            if shift_while_copying:
                torch.sub(window, mean, out=buffer[slot, 0])
            else:
                buffer[slot, 0].copy_(window)
        if normalize:
            # Only the filled slots: stale slots of a short last batch are never read back.
            filled = buffer[: len(batch)]
            if not shift_while_copying:
                filled.sub_(mean)
            filled.mul_(1.0 / std)
        if buffer.device != self.compute:
            return buffer.to(self.compute, non_blocking=True)
        return buffer

    def _run_batch(
        self, batch: list[tuple[int, Transform]], inputs: torch.Tensor, checked: bool
    ) -> bool:
        if not self.settings.pad_last_batch and len(batch) < inputs.shape[0]:
            inputs = inputs[: len(batch)]  # the stale slots would cost a forward each
        logits = self.forward(inputs)
        if not checked:
            _check_output(logits, inputs, self.settings.channels)
        if self.store.type == "cpu":
            # Move first, widen second: half the transfer when the forward ran in fp16 or bf16
            # (and the CPU's half-precision arithmetic is slow).
            logits = logits.to(self.store).float()
        # On a GPU, fp16/bf16 logits go straight into the fp32 sums: addcmul_ widens them as it
        # reads them, so no fp32 copy of the batch is written and read back.
        for slot, (index, transform) in enumerate(batch):
            z, y, x = self.plan.starts[index]
            window = logits[slot, 0] if self.settings.channels == 1 else logits[slot]
            if not transform.is_identity:
                window = tta.invert(transform, window, self.output_offset)
            # The Gaussian is symmetric under flips, and under the quarter turns and transposes
            # a patch admits (equal sides, runtime.contract.tta.check_patch): the same weights.
            self.accumulator.add(
                z, y, x, window, self.weights, count_weight=transform == self.settings.transforms[0]
            )
        return True

    def _emit(self, z0: int, sums: torch.Tensor, weight_sums: torch.Tensor | None) -> None:
        """Write finished rows ``z0 ..`` of the padded volume into the result, cropping the pad."""
        bz, by, bx = self.plan.pad_before
        sz, sy, sx = self.plan.shape
        first = max(z0, bz)
        last = min(z0 + sums.shape[-3], bz + sz)
        if first >= last:
            return
        rows = slice(first - z0, last - z0)
        crop = (rows, slice(by, by + sy), slice(bx, bx + sx))
        part = sums[(..., *crop)]
        # One reduction per emitted block: a NaN would compare false with the cut and erase
        # foreground silently, an inf would swamp its neighbours' votes.
        if not bool(torch.isfinite(part).all()):
            bad = int((~torch.isfinite(part)).sum())
            raise NonFiniteOutput(
                f"the model returned non-finite values (NaN or inf) reaching {bad} voxel(s)"
            )
        rows_out = slice(first - bz, last - bz)
        if self.settings.channels > 1:
            assert weight_sums is not None
            self._emit_combined(
                part / (weight_sums[crop] * len(self.settings.transforms)), rows_out
            )
            return
        if self.mask is not None:
            cut = 0.0 if weight_sums is None else self.cut * weight_sums[crop]
            mask = part > cut
            self.mask[rows_out] = mask.to(torch.uint8).cpu().numpy()
        if self.values is not None:
            assert weight_sums is not None
            logits = (part / (weight_sums[crop] * len(self.settings.transforms))).cpu().numpy()
            self.values[rows_out] = logits if self.output == "logits" else _sigmoid(logits)

    def _emit_combined(self, blended: torch.Tensor, rows_out: slice) -> None:
        """Blended log-odds against each rival -> the foreground's: p = 1 / (1 + sum exp(-E_k)).

        So log(p / (1 - p)) = -logsumexp(-E): the softmax probability of nnU-Net's blended logits.
        """
        log_odds = -torch.logsumexp(-blended, dim=0)
        if self.mask is not None:
            mask = log_odds > logit_threshold(self.settings.threshold)
            self.mask[rows_out] = mask.to(torch.uint8).cpu().numpy()
        if self.values is not None:
            values = log_odds if self.output == "logits" else torch.sigmoid(log_odds)
            self.values[rows_out] = values.cpu().numpy()


class _Accumulator:
    """fp32 sums of weighted logits for a z-range ``[lo, lo + depth)`` of the padded volume.

    With several channels the sums are ``(C, depth, Y, X)``; every index is ``[..., z, y, x]``,
    so one code path serves both shapes (the weight sums stay ``(depth, Y, X)``).

    With ``depth`` equal to the volume's depth it holds everything until ``finish``. With a smaller
    depth (slab mode) rows are handed to ``emit`` as soon as no later window can reach them, which
    holds because windows arrive in z-major order and each spans at most ``depth`` rows.
    """

    def __init__(
        self,
        shape: Shape3,
        depth: int,
        device: torch.device,
        with_weights: bool,
        emit: Callable[[int, torch.Tensor, torch.Tensor | None], None],
        channels: int = 1,
    ) -> None:
        self.total = shape[0]
        self.depth = min(depth, shape[0])
        self.lo = 0
        buffer_shape = (self.depth, shape[1], shape[2])
        sums_shape = buffer_shape if channels == 1 else (channels, *buffer_shape)
        self.sums = torch.zeros(sums_shape, dtype=torch.float32, device=device)
        self.weight_sums = (
            torch.zeros(buffer_shape, dtype=torch.float32, device=device) if with_weights else None
        )
        self.emit = emit

    def add(
        self,
        z: int,
        y: int,
        x: int,
        logits: torch.Tensor,
        weights: torch.Tensor,
        *,
        count_weight: bool,
    ) -> None:
        pz, py, px = logits.shape[-3:]  # a multi-channel window is (C, pz, py, px)
        if z + pz > self.lo + self.depth:
            self._advance(z)
        region = (..., slice(z - self.lo, z - self.lo + pz), slice(y, y + py), slice(x, x + px))
        self.sums[region].addcmul_(logits, weights)
        if self.weight_sums is not None and count_weight:
            self.weight_sums[region].add_(weights)

    def _advance(self, z: int) -> None:
        """Rows below ``z`` are final: emit them and slide the buffer up to start at ``z``."""
        done = z - self.lo
        if done <= 0 or done > self.depth:
            raise RuntimeError(f"windows out of z order: {z} after slab start {self.lo}")
        self.emit(self.lo, self.sums[..., :done, :, :], _head(self.weight_sums, done))
        for buffer in (self.sums, self.weight_sums):
            if buffer is not None:
                buffer[..., : self.depth - done, :, :] = buffer[..., done:, :, :].clone()
                buffer[..., self.depth - done :, :, :].zero_()
        self.lo = z

    def finish(self) -> None:
        rows = self.total - self.lo
        self.emit(self.lo, self.sums[..., :rows, :, :], _head(self.weight_sums, rows))


def choose_accumulation(
    plan: WindowPlan,
    *,
    source_itemsize: int,
    weight_sum: bool,
    free_bytes: int,
    working_bytes: int,
    channels: int = 1,
) -> str:
    """ "device" if the whole fp32 accumulator fits in 90% of ``free_bytes``, else "slab", else "host".

    ``working_bytes`` is what one batch forward needs (measured by the probe's warm-up).
    """
    voxels = math.prod(plan.padded_shape)
    slab = plan.patch[0] * plan.padded_shape[1] * plan.padded_shape[2]
    # fp32 sums (+ weight sums) while blending, then a bool and a uint8 mask when emitting.
    per_voxel = 4 * (channels + (1 if weight_sum or channels > 1 else 0)) + 2
    room = 0.9 * free_bytes - working_bytes
    if voxels * (source_itemsize + per_voxel) <= room:
        return "device"
    if voxels * source_itemsize + slab * per_voxel <= room:
        return "slab"
    return "host"


def source_itemsize(dtype: np.dtype) -> int:
    """Bytes per voxel of a volume of ``dtype`` once in a torch-compatible type."""
    return _torch_compatible(np.empty(0, dtype=dtype)).dtype.itemsize


def _sigmoid(logits: np.ndarray) -> np.ndarray:
    """float32 sigmoid whose value for a voxel does not depend on where it lies in the array.

    torch's CPU sigmoid computes the vectorized body and the scalar tail of a row differently
    (values differ in the last bit), so the same voxel would come out differently in a block and
    in the whole volume; numpy's float32 exp treats every element alike.
    """
    with np.errstate(over="ignore"):
        return np.float32(1.0) / (np.float32(1.0) + np.exp(-logits))


def _head(buffer: torch.Tensor | None, rows: int) -> torch.Tensor | None:
    return None if buffer is None else buffer[:rows]


def _check_output(logits: torch.Tensor, inputs: torch.Tensor, channels: int = 1) -> None:
    expected = (inputs.shape[0], channels, *inputs.shape[2:])
    if not isinstance(logits, torch.Tensor) or tuple(logits.shape) != tuple(expected):
        got = tuple(logits.shape) if isinstance(logits, torch.Tensor) else type(logits).__name__
        raise ModelError(
            f"the model returned {got} for a window batch of shape {tuple(inputs.shape)}; "
            f"it must return {channels} foreground log-odds channel(s) per voxel, "
            f"(N, {channels}, Z, Y, X)"
        )


def _torch_compatible(volume: np.ndarray) -> np.ndarray:
    """The volume in a dtype torch can slice and convert; lossless, and a copy only if needed."""
    kind = volume.dtype
    if kind == np.bool_:
        return volume.view(np.uint8)
    if kind == np.uint16:
        return volume.astype(np.int32)  # torch's uint16 supports too few ops
    if kind == np.uint32:
        return volume.astype(np.int64)
    if kind in (np.uint8, np.int8, np.int16, np.int32, np.int64):
        return volume
    if kind in (np.float16, np.float32, np.float64):
        return volume
    raise VolumeError(f"unsupported voxel type {kind}: expected an integer or float volume")
