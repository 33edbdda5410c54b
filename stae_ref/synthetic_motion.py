"""Synthetic camera motion over real photos, with exact ground truth.

Training mixes in sequences of a virtual camera moving over one of the photos that ship inside
scikit-image (no download): smooth random pan, zoom and rotation whose velocities follow a smooth
random walk (some sequences static, some pausing), plus handheld shake. The camera path is the
ground truth: frame t is, by definition, the photo warped by the affine ``matrices[t]`` (output
pixel -> photo pixel, :func:`render_frames`), and the motion between two frames is known exactly
(:func:`frame_to_frame`).

Quality: a view that covers more photo pixels than output pixels is warped bilinearly at twice
the output size from the photo shrunk once per sequence with area interpolation (to twice the
output resolution at the path's largest scale), then area-averaged 2x2: frames are not aliased
and about as sharp as an area resize (equal within a grey level where the grids line up). The path is kept inside the photo with a margin for the sampling
footprint: frames never show a border. numpy + OpenCV only; scikit-image only loads the photos.
"""
from __future__ import annotations

import functools
import math
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Sequence

import cv2
import numpy as np

from stae_deploy.runtime.errors import ConfigError, FootageError
from stae_deploy.runtime.files import atomic_path
from stae_deploy.runtime.frames import model_frame_to_bgr
from stae_deploy.runtime.media import side_by_side

# The offline photos of scikit-image (files inside the package; verified to load without network).
# Left out: retina (a black disc around the fundus), the grey scans and synthetic images, and every
# loader that downloads (eagle, cells3d, lily, skin, ...).
PHOTO_NAMES = ("astronaut", "coffee", "chelsea", "rocket", "hubble_deep_field", "motorcycle_left",
               "motorcycle_right", "immunohistochemistry", "grass", "gravel", "brick")
DEFAULT_MIN_SIDE_PX = 256
MIN_PHOTO_SIDE_PX = 16
SUPERSAMPLING = 2        # a zoomed-out view is warped at twice the output size, then area-averaged


@functools.lru_cache(maxsize=1)
def _skimage_photos() -> tuple[tuple[str, np.ndarray], ...]:
    try:
        from skimage import data
    except ImportError:
        raise FootageError("photos: scikit-image is not installed (pip install "
                           "'stae-deploy[ref]')") from None
    left, right, _ = data.stereo_motorcycle()
    photos = []
    for name in PHOTO_NAMES:
        image = {"motorcycle_left": left, "motorcycle_right": right}.get(name)
        image = getattr(data, name)() if image is None else image
        rgb = cv2.cvtColor(image, cv2.COLOR_GRAY2RGB) if image.ndim == 2 else image[..., :3]
        rgb = np.ascontiguousarray(rgb, dtype=np.uint8)
        rgb.flags.writeable = False          # shared by every caller (cached)
        photos.append((name, rgb))
    return tuple(photos)


def load_named_photos(min_side: int = DEFAULT_MIN_SIDE_PX) -> dict[str, np.ndarray]:
    """The offline scikit-image photos whose shorter side is >= ``min_side`` pixels, by name (in
    :data:`PHOTO_NAMES` order): RGB uint8 ``(H, W, 3)``, grey textures repeated to 3 channels.
    Read-only arrays, loaded once per process."""
    if isinstance(min_side, bool) or not isinstance(min_side, int) or min_side < 1:
        raise ConfigError(f"min_side: expected an integer >= 1 (pixels), got {min_side!r}")
    return {name: photo for name, photo in _skimage_photos() if min(photo.shape[:2]) >= min_side}


def load_photos(min_side: int = DEFAULT_MIN_SIDE_PX) -> list[np.ndarray]:
    """:func:`load_named_photos` as a list: RGB uint8 ``(H, W, 3)`` photos, shorter side >=
    ``min_side`` pixels (all 11 at the default 256; the smallest, chelsea, is 300x451)."""
    return list(load_named_photos(min_side).values())


@dataclass(frozen=True)
class SyntheticMotionConfig:
    """How the virtual camera moves. Speeds are at the output size (pixels of the rendered frame).

    Each moving sequence draws a mean velocity per motion (pan direction and speed in
    [0, pan_px_per_frame_max], zoom in +-zoom_per_frame_max, rotation in
    +-rotation_deg_per_frame_max); every ``motion_change_frames`` frames the velocities take a new
    keyframe, the mean plus noise of standard deviation ``motion_variability`` times each maximum,
    and ease smoothly to it (smoothstep); velocities are clipped to their maxima. A move that would
    leave the photo is reflected and its velocity reversed. ``zoom_per_frame``: change of the log
    magnification per frame (0.01: the content grows by about 1 %). ``tilt_deg_max``: the view's
    angle stays within +-this. ``static_fraction`` of sequences do not move at all (a tripod, no
    shake); ``pause_fraction`` stop moving for a random stretch of a quarter to half of their steps
    (shake goes on). A ``shake_fraction`` share of the others is handheld: shake with an RMS per
    axis drawn from ``shake_px_range`` (output pixels), smoothed over ``shake_smoothness_frames``
    (0: white). ``source_px_per_output_px_range``: the first frame's zoom level, in photo pixels per
    output pixel (>= 1: photos are never upsampled, except one too small for the output size).
    Photos are mirrored left-right with ``flip_probability``.
    """

    pan_px_per_frame_max: float = 3.5
    zoom_per_frame_max: float = 0.01
    rotation_deg_per_frame_max: float = 0.5
    tilt_deg_max: float = 10.0
    motion_change_frames: float = 8.0
    motion_variability: float = 0.3
    shake_fraction: float = 0.6
    shake_px_range: tuple[float, float] = (0.3, 1.5)
    shake_smoothness_frames: float = 1.5
    static_fraction: float = 0.1
    pause_fraction: float = 0.15
    source_px_per_output_px_range: tuple[float, float] = (1.0, 3.0)
    flip_probability: float = 0.5

    def __post_init__(self) -> None:
        for field in fields(self):
            value = getattr(self, field.name)
            values = value if isinstance(value, tuple) else (value,)
            if not all(isinstance(v, (int, float)) and not isinstance(v, bool)
                       and math.isfinite(v) for v in values):
                raise ConfigError(f"{field.name}: expected finite numbers, got {value!r}")
        _require(self, "pan_px_per_frame_max", 0 <= self.pan_px_per_frame_max, ">= 0")
        _require(self, "zoom_per_frame_max", 0 <= self.zoom_per_frame_max < 0.5, "in [0, 0.5)")
        _require(self, "rotation_deg_per_frame_max", 0 <= self.rotation_deg_per_frame_max <= 45,
                 "in [0, 45] degrees")
        _require(self, "tilt_deg_max", 0 <= self.tilt_deg_max <= 45, "in [0, 45] degrees")
        _require(self, "motion_change_frames", self.motion_change_frames > 0, "> 0 frames")
        _require(self, "motion_variability", 0 <= self.motion_variability <= 1, "in [0, 1]")
        _require(self, "shake_fraction", 0 <= self.shake_fraction <= 1, "in [0, 1]")
        _require(self, "shake_px_range", len(self.shake_px_range) == 2
                 and 0 <= self.shake_px_range[0] <= self.shake_px_range[1],
                 "(low, high) pixels with 0 <= low <= high")
        _require(self, "shake_smoothness_frames", self.shake_smoothness_frames >= 0, ">= 0 frames")
        _require(self, "static_fraction", 0 <= self.static_fraction <= 1, "in [0, 1]")
        _require(self, "pause_fraction", 0 <= self.pause_fraction <= 1
                 and self.static_fraction + self.pause_fraction <= 1,
                 "in [0, 1] with static_fraction + pause_fraction <= 1")
        _require(self, "source_px_per_output_px_range", len(self.source_px_per_output_px_range) == 2
                 and 0 < self.source_px_per_output_px_range[0]
                 <= self.source_px_per_output_px_range[1], "(low, high) with 0 < low <= high")
        _require(self, "flip_probability", 0 <= self.flip_probability <= 1, "in [0, 1]")


def _require(config: SyntheticMotionConfig, name: str, ok: bool, expected: str) -> None:
    if not ok:
        raise ConfigError(f"{name}: expected {expected}, got {getattr(config, name)!r}")


@dataclass(frozen=True, eq=False)
class SyntheticSequence:
    """One rendered sequence and its exact ground truth (F frames, S x S output).

    frames: float32 ``(F, 3, S, S)`` RGB in [0, 1]. matrices: float64 ``(F, 2, 3)``, per frame the
    affine mapping an output pixel (x, y) to a pixel of ``photo`` (the photo as stored, a left-right
    mirror included in the matrix): ``frames == render_frames(photo, matrices, S)``.
    The motion actually applied between frames t and t+1 (after keeping the view inside the photo):
    pan_px_per_frame ``(F-1, 2)`` camera motion along the frame's x and y axes in output pixels
    (the content moves the other way: in a pure pan, frame t+1 at pixel u shows frame t at
    u + pan; :func:`frame_to_frame` gives the exact map in general),
    zoom_per_frame ``(F-1,)`` log magnification change (log(s_t / s_t+1), s: photo pixels per output
    pixel; 0.01: the content grows by about 1 %), rotation_deg_per_frame
    ``(F-1,)`` change of the view angle; shake_px ``(F, 2)`` the handheld offset of each frame in
    output pixels. kind: "moving", "pause" or "static".
    """

    frames: np.ndarray
    matrices: np.ndarray
    photo: np.ndarray
    photo_index: int
    kind: str
    pan_px_per_frame: np.ndarray
    zoom_per_frame: np.ndarray
    rotation_deg_per_frame: np.ndarray
    shake_px: np.ndarray


class SyntheticMotion:
    """Random camera motion over ``photos`` (RGB uint8 ``(H, W, 3)`` arrays, e.g.
    :func:`load_photos`), as training sequences. Deterministic for a given generator state."""

    def __init__(self, photos: Sequence[np.ndarray],
                 config: SyntheticMotionConfig = SyntheticMotionConfig()):
        if not len(photos):
            raise ConfigError("photos: expected at least one photo, got none")
        for i, photo in enumerate(photos):
            if not isinstance(photo, np.ndarray) or photo.dtype != np.uint8 or photo.ndim != 3 \
                    or photo.shape[2] != 3 or min(photo.shape[:2]) < MIN_PHOTO_SIDE_PX:
                raise ConfigError(
                    f"photos[{i}]: expected RGB uint8 (H, W, 3) with H, W >= {MIN_PHOTO_SIDE_PX}, "
                    f"got {getattr(photo, 'dtype', type(photo).__name__)} "
                    f"{getattr(photo, 'shape', '')}")
        self.photos = [np.ascontiguousarray(photo) for photo in photos]
        self.config = config

    def sample(self, rng: np.random.Generator, frames: int, size: int) -> np.ndarray:
        """One sequence: float32 ``(frames, 3, size, size)`` RGB in [0, 1]."""
        return self.sample_sequence(rng, frames, size).frames

    def sample_sequence(self, rng: np.random.Generator, frames: int,
                        size: int) -> SyntheticSequence:
        """One sequence with its camera path and applied motion (:class:`SyntheticSequence`)."""
        for name, value, low in (("frames", frames, 1), ("size", size, 2)):
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
                raise ConfigError(f"{name}: expected an integer >= {low}, got {value!r}")
        frames, size = int(frames), int(size)
        config = self.config
        photo_index = int(rng.integers(len(self.photos)))
        photo = self.photos[photo_index]
        mirrored = bool(rng.random() < config.flip_probability)
        draw = rng.random()
        kind = "static" if draw < config.static_fraction else \
            "pause" if draw < config.static_fraction + config.pause_fraction else "moving"
        handheld = kind != "static" and rng.random() < config.shake_fraction
        shake = _shake(rng, config, frames) if handheld else np.zeros((frames, 2))
        path = _CameraPath(rng, config, photo.shape[:2], frames, size, kind, shake)
        matrices = path.matrices(size, shake)
        if mirrored:                          # x -> W - 1 - x: the same path over the mirror image
            matrices[:, 0, :] *= -1.0
            matrices[:, 0, 2] += photo.shape[1] - 1
        return SyntheticSequence(
            frames=render_frames(photo, matrices, size), matrices=matrices, photo=photo,
            photo_index=photo_index, kind=kind,
            pan_px_per_frame=np.asarray(path.pan, np.float64).reshape(-1, 2),
            zoom_per_frame=np.asarray(path.zoom, np.float64),
            rotation_deg_per_frame=np.asarray(path.rotation, np.float64), shake_px=shake)


def _shake(rng: np.random.Generator, config: SyntheticMotionConfig, frames: int) -> np.ndarray:
    """Handheld offsets ``(frames, 2)`` in output pixels: low-passed noise, zero mean, RMS per axis
    exactly the drawn amplitude."""
    amplitude = rng.uniform(*config.shake_px_range)
    noise = rng.standard_normal((frames, 2))
    if config.shake_smoothness_frames > 0:
        keep = math.exp(-1.0 / config.shake_smoothness_frames)
        for t in range(1, frames):
            noise[t] = keep * noise[t - 1] + (1.0 - keep) * noise[t]
    noise -= noise.mean(axis=0)
    rms = np.sqrt((noise ** 2).mean(axis=0))
    return noise * np.where(rms > 1e-12, amplitude / np.maximum(rms, 1e-12), 0.0)


class _CameraPath:
    """The smooth part of a camera path: per frame the view centre (photo pixels), scale (photo
    pixels per output pixel) and angle (degrees), kept so that every output pixel, shake included,
    samples inside the photo with a margin for the bilinear footprint of the shrunk photo.
    Where a move would leave the allowed range it is reflected back and its velocity reversed."""

    def __init__(self, rng: np.random.Generator, config: SyntheticMotionConfig,
                 photo_hw: tuple[int, int], frames: int, size: int, kind: str,
                 shake: np.ndarray):
        height, width = photo_hw
        self.size_px = (width, height)
        # Output px from the centre to the farthest sample (supersampling reaches 1/4 further).
        self.reach = (size - 1) / 2.0 + 0.25 + float(np.abs(shake).max())
        self.tilt = config.tilt_deg_max
        spread = math.cos(math.radians(self.tilt)) + math.sin(math.radians(self.tilt))
        scale_high = (min(height, width) - 3.0) / (2.0 * self.reach * spread + 1.0)
        # Shrinking the photo to 2 / s (s: the largest scale) moves its edge pixel centres
        # s / 4 - 1/2 inwards; half a scale plus a pixel also covers rounding of the shrunk size.
        self.margin = 0.5 * scale_high + 1.0
        low, high = config.source_px_per_output_px_range
        self.log_scale_range = (math.log(min(low, scale_high)), math.log(scale_high))
        log_scale = rng.uniform(self.log_scale_range[0], math.log(min(high, scale_high)))
        angle = rng.uniform(-0.5, 0.5) * self.tilt
        bounds = self._centre_bounds(math.exp(log_scale), angle)
        centre = [rng.uniform(*bounds[0]), rng.uniform(*bounds[1])]

        steps = frames - 1
        pan_max, zoom_max = config.pan_px_per_frame_max, config.zoom_per_frame_max
        rotation_max = config.rotation_deg_per_frame_max
        heading, speed = rng.uniform(0.0, 2.0 * math.pi), rng.uniform(0.0, pan_max)
        mean = np.array([speed * math.cos(heading), speed * math.sin(heading),
                         rng.uniform(-zoom_max, zoom_max),
                         rng.uniform(-rotation_max, rotation_max)])
        # Velocity keyframes (pan x, pan y, zoom, rotation) every motion_change_frames frames,
        # from a random phase; between them velocities ease smoothly (smoothstep).
        period = config.motion_change_frames
        phase = rng.uniform(0.0, 1.0)
        knots = mean + rng.standard_normal((int(steps / period + phase) + 2, 4)) * (
            np.array([pan_max, pan_max, zoom_max, rotation_max]) * config.motion_variability)
        paused = range(0)
        if kind == "pause" and steps:
            length = int(rng.integers(max(1, steps // 4), max(1, steps // 2) + 1))
            start = int(rng.integers(0, steps - length + 1))
            paused = range(start, start + length)

        self.centres, self.log_scales, self.angles = [tuple(centre)], [log_scale], [angle]
        self.pan: list[tuple[float, float]] = []
        self.zoom: list[float] = []
        self.rotation: list[float] = []
        for t in range(steps):
            knot, fraction = divmod(t / period + phase, 1.0)
            ease = fraction * fraction * (3.0 - 2.0 * fraction)
            pan_x, pan_y, zoom, rotation = (
                knots[int(knot)] * (1.0 - ease) + knots[int(knot) + 1] * ease).tolist()
            norm = math.hypot(pan_x, pan_y)
            if norm > pan_max:
                pan_x, pan_y = pan_x * pan_max / norm, pan_y * pan_max / norm
            zoom = min(max(zoom, -zoom_max), zoom_max)
            rotation = min(max(rotation, -rotation_max), rotation_max)
            if kind == "static" or t in paused:
                pan_x = pan_y = zoom = rotation = 0.0
            new_angle, angle_bounced = _reflect(angle + rotation, -self.tilt, self.tilt)
            new_log_scale, scale_bounced = _reflect(log_scale - zoom,
                                                    *self.log_scale_range)
            scale = math.exp(log_scale)
            cos, sin = math.cos(math.radians(angle)), math.sin(math.radians(angle))
            step = (scale * (cos * pan_x - sin * pan_y), scale * (sin * pan_x + cos * pan_y))
            new_bounds = self._centre_bounds(math.exp(new_log_scale), new_angle)
            if not all(low <= c <= high for c, (low, high) in zip(centre, new_bounds)):
                # Zooming out or turning here would push the view out of the photo: hold both
                # this step and reverse them (the centre never moves more than the pan).
                new_angle, new_log_scale = angle, log_scale
                new_bounds = self._centre_bounds(math.exp(log_scale), angle)
                angle_bounced = scale_bounced = True
            if scale_bounced:
                knots[:, 2] *= -1.0
            if angle_bounced:
                knots[:, 3] *= -1.0
            new_centre = list(centre)
            for axis in (0, 1):
                new_centre[axis], bounced = _reflect(centre[axis] + step[axis], *new_bounds[axis])
                if bounced:       # reverse the pan along this photo axis, in the camera's frame
                    knots[:, :2] = _mirror(knots[:, :2], cos, sin, axis)
            moved = (new_centre[0] - centre[0], new_centre[1] - centre[1])
            self.pan.append(((cos * moved[0] + sin * moved[1]) / scale,
                             (-sin * moved[0] + cos * moved[1]) / scale))
            self.zoom.append(log_scale - new_log_scale)
            self.rotation.append(new_angle - angle)
            centre, log_scale, angle = new_centre, new_log_scale, new_angle
            self.centres.append(tuple(centre))
            self.log_scales.append(log_scale)
            self.angles.append(angle)

    def _centre_bounds(self, scale: float, angle: float) -> tuple[tuple[float, float], ...]:
        """Allowed (low, high) of the view centre along photo x and y at this scale and angle."""
        radians = math.radians(angle)
        spread = abs(math.cos(radians)) + abs(math.sin(radians))
        extent = self.margin + scale * self.reach * spread
        return tuple((extent, side - 1.0 - extent) for side in self.size_px)

    def matrices(self, size: int, shake: np.ndarray) -> np.ndarray:
        """Per frame the affine (2, 3) taking output pixel u to photo pixel
        centre + scale * R(angle) @ (u - middle + shake): float64 ``(F, 2, 3)``."""
        scale = np.exp(np.asarray(self.log_scales))
        radians = np.radians(np.asarray(self.angles))
        linear = np.empty((len(scale), 2, 2))
        linear[:, 0, 0], linear[:, 0, 1] = scale * np.cos(radians), -scale * np.sin(radians)
        linear[:, 1, 0], linear[:, 1, 1] = scale * np.sin(radians), scale * np.cos(radians)
        offset = shake - (size - 1) / 2.0
        translation = np.asarray(self.centres) + np.einsum("fij,fj->fi", linear, offset)
        return np.concatenate([linear, translation[:, :, None]], axis=2)


def _reflect(value: float, low: float, high: float) -> tuple[float, bool]:
    """``value`` reflected back into [low, high] (clipped if the step overshoots the range);
    whether it was outside."""
    if value > high:
        return max(low, 2.0 * high - value), True
    if value < low:
        return min(high, 2.0 * low - value), True
    return value, False


def _mirror(vectors: np.ndarray, cos: float, sin: float, axis: int) -> np.ndarray:
    """Camera-frame vectors ``(n, 2)`` with their photo-frame component along ``axis`` negated
    (the camera's x axis is at angle (cos, sin) in the photo)."""
    rotation = np.array([[cos, -sin], [sin, cos]])
    photo = vectors @ rotation.T
    photo[:, axis] *= -1.0
    return photo @ rotation


def render_frames(photo: np.ndarray, matrices: np.ndarray, size: int) -> np.ndarray:
    """The frames of a camera path: float32 ``(F, 3, size, size)`` RGB in [0, 1].

    ``photo``: RGB uint8 ``(H, W, 3)``; ``matrices``: ``(F, 2, 3)`` affines output pixel -> photo
    pixel. Where the path's largest scale s (photo pixels per output pixel) is at most 1, each
    frame is a bilinear ``cv2.warpAffine`` of the photo. Otherwise (an area-like average, not
    aliased): the region the path covers is shrunk to 2/s with area interpolation (when s > 2),
    each frame is warped bilinearly at twice the output size and area-averaged 2x2. Samples
    outside the photo would be black (the paths of :class:`SyntheticMotion` never take any).
    """
    count = len(matrices)
    scale_max = float(np.sqrt(np.abs(np.linalg.det(matrices[:, :, :2]))).max()) if count else 1.0
    source, warps = photo, np.array(matrices, np.float64)
    fine = size
    if scale_max > 1.0 + 1e-9:
        fine = SUPERSAMPLING * size
        # Fine pixel v sits at output pixel (v + 0.5) / n - 0.5.
        offset = (1.0 / SUPERSAMPLING - 1.0) / 2.0
        warps[:, :, 2] += warps[:, :, :2].sum(axis=2) * offset
        warps[:, :, :2] /= SUPERSAMPLING
        if scale_max > SUPERSAMPLING:
            source, warps = _shrunk(photo, warps, fine, scale_max / SUPERSAMPLING)
    out = np.empty((count, fine, fine, 3), np.uint8)
    for t in range(count):
        cv2.warpAffine(source, warps[t], (fine, fine), dst=out[t],
                       flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                       borderMode=cv2.BORDER_CONSTANT, borderValue=0)
    if fine != size:      # one call for all frames: the 2x2 blocks never straddle two frames
        out = cv2.resize(out.reshape(count * fine, fine, 3), (size, count * size),
                         interpolation=cv2.INTER_AREA).reshape(count, size, size, 3)
    frames = out.transpose(0, 3, 1, 2).astype(np.float32)
    frames *= np.float32(1.0 / 255.0)
    return frames


def _shrunk(photo: np.ndarray, warps: np.ndarray, size: int,
            factor: float) -> tuple[np.ndarray, np.ndarray]:
    """The part of ``photo`` that ``warps`` (F, 2, 3) sample at ``size`` x ``size``, shrunk by
    ``factor`` > 1 with area interpolation, and the warps into the shrunk image."""
    corners = np.array([[0, 0, 1], [size - 1, 0, 1], [0, size - 1, 1], [size - 1, size - 1, 1]],
                       np.float64)
    points = np.einsum("fij,cj->fci", warps, corners).reshape(-1, 2)
    pad = 2.0 * factor + 2.0
    height, width = photo.shape[:2]
    x0, y0 = (max(0, math.floor(v - pad)) for v in points.min(axis=0))
    x1 = min(width, math.ceil(points[:, 0].max() + pad) + 1)
    y1 = min(height, math.ceil(points[:, 1].max() + pad) + 1)
    small_w, small_h = max(1, round((x1 - x0) / factor)), max(1, round((y1 - y0) / factor))
    small = cv2.resize(photo[y0:y1, x0:x1], (small_w, small_h), interpolation=cv2.INTER_AREA)
    # Area resizing maps pixel centres as q = k * (p - origin + 0.5) - 0.5.
    shrink = np.array([small_w / (x1 - x0), small_h / (y1 - y0)])
    warps = warps * shrink[None, :, None]
    warps[:, :, 2] += shrink * (0.5 - np.array([x0, y0])) - 0.5
    return small, warps


def frame_to_frame(matrices: np.ndarray) -> np.ndarray:
    """Exact motion between consecutive frames: ``(F-1, 2, 3)`` affines taking a pixel of frame
    t+1 to the position of the same photo point in frame t (``matrices`` as in
    :class:`SyntheticSequence`)."""
    homogeneous = np.zeros((len(matrices), 3, 3))
    homogeneous[:, :2], homogeneous[:, 2, 2] = matrices, 1.0
    return (np.linalg.inv(homogeneous[:-1]) @ homogeneous[1:])[:, :2]


def save_preview(path: str | Path, motion: SyntheticMotion, rng: np.random.Generator,
                 sequences: int = 4, frames: int = 8, size: int = 96) -> Path:
    """Write a PNG of ``sequences`` rows of ``frames`` frames (``size`` pixels) each, every panel
    captioned with the sequence's kind and frame index; returns the path."""
    rows = []
    for _ in range(sequences):
        sequence = motion.sample_sequence(rng, frames, size)
        rows.append(side_by_side([(f"{sequence.kind} t={t}", model_frame_to_bgr(frame))
                                  for t, frame in enumerate(sequence.frames)]))
    png = cv2.imencode(".png", np.vstack(rows))[1]
    with atomic_path(Path(path)) as partial:
        partial.write_bytes(png.tobytes())
    return Path(path)
