"""Degradation synthesis (docs/design.md, "Training data").

Every function here is a pure function of (clean image, parameters, seed): the input is a
float32 H×W×3 array in [0, 1], the output a new float32 array in [0, 1] of the same shape;
the same seed always gives the same result. Parameters left as ``None`` are drawn from the
seed, in ranges chosen to resemble the public benchmarks (stated in each docstring).

Single degradations
    :func:`gaussian_noise` (the PromptIR test protocol), :func:`rain` (additive streak
    layer), :func:`haze` (atmospheric scattering model), :func:`motion_blur` (random camera
    trajectory kernel), :func:`low_light` (exposure/gamma darkening with Poisson–Gaussian
    sensor noise).
Mixtures, for a CDD-11-like mixed benchmark
    :func:`compose` chains degradations in their physical order (scene → sensor);
    :func:`spatially_varying` blends differently degraded copies with soft random masks,
    so that the degradation type or strength changes across the image.

:data:`SYNTHESIZERS` maps each standard task id to a ``fn(img, seed)`` used for training
and for the synthetic test sets.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import cv2
import numpy as np
from scipy.ndimage import gaussian_filter

from expertir.errors import ExpertirError

Image = np.ndarray


def _rng(seed: int | Sequence[int]) -> np.random.Generator:
    return np.random.default_rng(seed)


def sub_seed(seed: int, *keys: int) -> int:
    """A 32-bit seed derived from ``seed`` and integer ``keys`` (independent streams)."""
    return int(np.random.SeedSequence([int(seed), *map(int, keys)]).generate_state(1)[0])


def _check(img: Image) -> Image:
    img = np.asarray(img, dtype=np.float32)
    if img.ndim != 3 or img.shape[2] != 3:
        raise ExpertirError(f"degradations expect an H×W×3 image, got shape {img.shape}")
    return img


def _finish(img: Image) -> Image:
    return np.clip(img, 0.0, 1.0).astype(np.float32)


# --------------------------------------------------------------------------- noise
def gaussian_noise(img: Image, sigma: float, seed: int, quantize: bool = True) -> Image:
    """Additive white Gaussian noise, σ on the 0–255 scale — the PromptIR test protocol.

    Model: ``y = x + n``, ``n ~ N(0, σ²)`` i.i.d. per pixel and channel. PromptIR's
    ``_add_gaussian_noise`` works on the uint8 image: ``noise = np.random.randn(*shape)``,
    ``noisy = np.clip(clean + noise * sigma, 0, 255).astype(np.uint8)`` — a clip, then a
    cast that *truncates* (floors) to uint8. This function does exactly that, with the
    noise drawn by ``np.random.RandomState(seed).randn`` (the legacy generator behind
    ``np.random.randn``), so ``seed=0`` reproduces PromptIR's draw for the first image after
    its ``np.random.seed(0)``. ``quantize=False`` keeps the clipped float values instead.
    Any channel count is accepted (H×W×1 for gray noise).
    """
    img = np.asarray(img, dtype=np.float32)
    if img.ndim != 3:
        raise ExpertirError(f"gaussian_noise expects an H×W×C image, got shape {img.shape}")
    clean255 = np.round(img.astype(np.float64) * 255.0)  # exact for 8-bit images
    noise = np.random.RandomState(int(seed) % 2**32).randn(*img.shape)
    noisy = np.clip(clean255 + noise * float(sigma), 0.0, 255.0)
    if quantize:
        noisy = noisy.astype(np.uint8)  # truncation, as in PromptIR
    return (noisy / 255.0).astype(np.float32)


def is_gray(img: Image) -> bool:
    """Whether an H×W×3 image has three equal channels (a gray image read as RGB)."""
    return bool(np.array_equal(img[..., 0], img[..., 1]) and np.array_equal(img[..., 1], img[..., 2]))


def protocol_noise(img: Image, sigma: float, seed: int) -> Image:
    """:func:`gaussian_noise` as the benchmarks add it, for training and testing alike.

    On a colour image the noise is i.i.d. per channel (CBSD68). On a gray image read as
    three equal channels one noise plane is drawn and replicated, so the noisy image stays
    gray — the gray-denoising protocol (BSD68, Set12). Training must follow the same rule:
    independent noise on R=G=B would let a model average three noisy copies of each pixel,
    a much easier task than the one it is tested on.
    """
    img = np.asarray(img, dtype=np.float32)
    if img.ndim == 3 and img.shape[2] == 3 and is_gray(img):
        return np.repeat(gaussian_noise(img[..., :1], sigma, seed), 3, axis=2)
    return gaussian_noise(img, sigma, seed)


# --------------------------------------------------------------------------- rain
def _line_kernel(length: float, angle_deg: float) -> np.ndarray:
    """A 1-px anti-aliased line of ``length`` pixels at ``angle_deg`` from the vertical."""
    size = int(np.ceil(length)) | 1
    kernel = np.zeros((size, size), np.float32)
    c = size // 2
    t = np.deg2rad(angle_deg)
    dx, dy = np.sin(t) * (length - 1) / 2, np.cos(t) * (length - 1) / 2
    shift = 4  # sub-pixel precision bits for cv2.line
    p0 = (int(round((c - dx) * 2**shift)), int(round((c - dy) * 2**shift)))
    p1 = (int(round((c + dx) * 2**shift)), int(round((c + dy) * 2**shift)))
    cv2.line(kernel, p0, p1, 1.0, thickness=1, lineType=cv2.LINE_AA, shift=shift)
    return kernel


def rain(img: Image, seed: int, angle: float | None = None, length: float | None = None,
         width: float | None = None, density: float | None = None,
         brightness: float | None = None) -> Image:
    """Rain streaks by the additive layer model ``O = clip(B + S, 0, 1)`` (Rain100L-style).

    The streak layer S: drops are sparse impulses (a fraction ``density`` of the pixels,
    random intensity), each smeared into a straight streak of ``length`` pixels tilted by
    ``angle`` degrees from the vertical (a line kernel), thickened by a Gaussian of std
    ``width`` pixels, scaled to peak ``brightness`` and added equally to R, G and B.
    Drawn from the seed when ``None``: angle U(−25°, 25°), length U(10, 35) px, width
    U(0.3, 0.8) px, density U(0.001, 0.004), brightness U(0.3, 0.7) (light rain, as in
    Rain100L; pass larger values for Rain100H-like heavy rain).
    """
    img = _check(img)
    rng = _rng(seed)
    angle = rng.uniform(-25, 25) if angle is None else angle
    length = rng.uniform(10, 35) if length is None else length
    width = rng.uniform(0.3, 0.8) if width is None else width
    density = rng.uniform(0.001, 0.004) if density is None else density
    brightness = rng.uniform(0.3, 0.7) if brightness is None else brightness
    h, w = img.shape[:2]
    drops = (rng.random((h, w)) < density) * rng.uniform(0.5, 1.0, (h, w))
    streaks = cv2.filter2D(drops.astype(np.float32), -1, _line_kernel(length, angle),
                           borderType=cv2.BORDER_REFLECT)
    if width > 0:
        streaks = gaussian_filter(streaks, width) * (1.0 + 2.0 * width)  # keep peak height
    streaks = np.clip(streaks, 0.0, 1.0) * brightness
    return _finish(img + streaks[..., None])


class StreakLayers:
    """A bank of real rain-streak layers (8-bit gray, streaks bright on black), e.g. the
    Garg & Nayar photographs used by RainMix.

    Every readable file under the given folders is loaded once (as uint8); an unreadable
    one is reported in one line (``problems``) and skipped, so one bad file does not stop
    training. Picklable, so loader workers get their own copy.
    """

    def __init__(self, folders: Sequence[str | Path], min_size: int = 64):
        from expertir.imageio import list_images, read_image

        self.layers: list[np.ndarray] = []
        self.problems: list[str] = []
        self.files: list[Path] = []
        for folder in folders:
            for path in list_images(folder, recursive=False):
                try:
                    gray = read_image(path).rgb.mean(axis=2)
                except ExpertirError as exc:
                    self.problems.append(str(exc))
                    continue
                if min(gray.shape) < min_size:
                    self.problems.append(f"{path}: streak layer smaller than {min_size} px, skipped")
                    continue
                self.layers.append(np.round(gray * 255).astype(np.uint8))
                self.files.append(Path(path))

    def __len__(self) -> int:
        return len(self.layers)


def layer_streaks(layers: StreakLayers, shape: tuple[int, int], rng: np.random.Generator,
                  count: int | None = None) -> np.ndarray:
    """A streak map in [0, 1] (H×W) made of 1–3 real layers, each randomly cropped, scaled
    U(0.6, 1.6)×, rotated U(−10°, 10°), mirrored half the time and weighted U(0.5, 1.0)
    (the strongest layer always at full weight); overlapping streaks combine like light
    (a screen blend), so the map saturates at 1."""
    h, w = shape
    count = int(rng.integers(1, 4)) if count is None else count
    out = np.zeros((h, w), np.float32)
    for k in range(count):
        layer = layers.layers[int(rng.integers(len(layers)))]
        lh, lw = layer.shape
        scale = rng.uniform(0.6, 1.6)
        ch, cw = min(lh, max(8, int(round(h / scale)))), min(lw, max(8, int(round(w / scale))))
        y, x = int(rng.integers(0, lh - ch + 1)), int(rng.integers(0, lw - cw + 1))
        crop = layer[y:y + ch, x:x + cw].astype(np.float32) / 255.0
        if rng.random() < 0.5:
            crop = crop[:, ::-1]
        crop = cv2.resize(np.ascontiguousarray(crop), (w, h), interpolation=cv2.INTER_LINEAR)
        angle = rng.uniform(-10, 10)
        if abs(angle) > 0.5:
            m = cv2.getRotationMatrix2D((w / 2, h / 2), angle, 1.0)
            crop = cv2.warpAffine(crop, m, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
        weight = 1.0 if k == 0 else rng.uniform(0.5, 1.0)
        out = 1.0 - (1.0 - out) * (1.0 - np.clip(weight * crop, 0.0, 1.0))
    return out


def layer_rain(img: Image, seed: int, layers: StreakLayers, intensity: float | None = None,
               blur: float | None = None, veil: float | None = None,
               intensity_range: Sequence[float] = (0.5, 1.0)) -> Image:
    """Rain from real streak layers: ``O = 1 − (1 − B')(1 − a·S)``, a screen blend that
    brightens the background like real streaks and saturates at white.

    S is :func:`layer_streaks`; ``a`` (``intensity``) scales it; the streaks are optionally
    blurred slightly (``blur``, the std of a Gaussian in pixels: streaks out of focus).
    ``B'`` is the clean image, with an optional loss of contrast towards its mean brightness
    (``veil``: light scattered by heavy rain). Drawn from the seed when ``None``: intensity
    U(``intensity_range``), by default U(0.5, 1.0); blur 0 or U(0.3, 0.8) px (half the
    time); no veil. Between the streaks the image is the clean one, as in the Rain100L
    inputs, whose pixels away from the streaks equal their targets (same mean, contrast and
    high-frequency energy to 0.1 %): a veil or a blur of the whole image would teach a model
    to sharpen and add contrast to every rainy photo.
    """
    img = _check(img)
    if not len(layers):
        raise ExpertirError("layer_rain needs at least one streak layer")
    rng = _rng(seed)
    intensity = rng.uniform(*intensity_range) if intensity is None else intensity
    blur = (rng.uniform(0.3, 0.8) if rng.random() < 0.5 else 0.0) if blur is None else blur
    veil = 0.0 if veil is None else veil
    streaks = np.minimum(float(intensity) * layer_streaks(layers, img.shape[:2], rng), 1.0)
    if blur > 0:
        streaks = cv2.GaussianBlur(streaks, (0, 0), float(blur))
    base = img * (1.0 - veil) + veil * img.mean() if veil > 0 else img
    out = 1.0 - (1.0 - base) * (1.0 - streaks[..., None])
    return _finish(out)


class LayerRain:
    """``fn(img, seed)``: :func:`layer_rain` with a bank of real streak layers; picklable.

    ``intensity``: the range ``(lo, hi)`` the streak weight ``a`` is drawn from (uniform).
    ``procedural_share``: the share of draws that use the procedural :func:`rain` instead,
    chosen from the seed (a mix of both streak kinds)."""

    def __init__(self, layers: StreakLayers, intensity: Sequence[float] = (0.5, 1.0),
                 procedural_share: float = 0.0):
        try:
            lo, hi = (float(v) for v in intensity)
        except (TypeError, ValueError):
            raise ExpertirError(f"rain intensity must be a range (lo, hi), not {intensity!r}") from None
        if not 0.0 < lo <= hi:
            raise ExpertirError(f"rain intensity must be a range 0 < lo <= hi, not {tuple(intensity)}")
        if not 0.0 <= procedural_share <= 1.0:
            raise ExpertirError(f"procedural rain share must be in [0, 1], not {procedural_share}")
        self.layers, self.intensity, self.procedural_share = layers, (lo, hi), float(procedural_share)

    def __call__(self, img: Image, seed: int) -> Image:
        if self.procedural_share and _rng(sub_seed(seed, 2)).random() < self.procedural_share:
            return rain(img, seed)
        return layer_rain(img, seed, self.layers, intensity_range=self.intensity)

    def __repr__(self) -> str:
        lo, hi = self.intensity
        extra = f", {self.procedural_share:.0%} procedural streaks" if self.procedural_share else ""
        return f"{len(self.layers)} real streak layers (weight U({lo:g}, {hi:g}){extra})"


# --------------------------------------------------------------------------- haze
def smooth_field(shape: tuple[int, int], rng: np.random.Generator, scale: float = 0.25) -> np.ndarray:
    """A smooth random field in [0, 1]: Gaussian noise on a coarse grid with cells of about
    ``scale`` × the image size, upsampled bicubically (a cheap low-pass random field)."""
    h, w = shape
    cell = max(2.0, scale * min(h, w))
    gh, gw = int(np.ceil(h / cell)) + 2, int(np.ceil(w / cell)) + 2
    coarse = rng.standard_normal((gh, gw)).astype(np.float32)
    big = cv2.resize(coarse, (int(gw * cell), int(gh * cell)), interpolation=cv2.INTER_CUBIC)
    oy, ox = int(cell), int(cell)  # drop the outer cells, where the interpolation bends
    field = big[oy:oy + h, ox:ox + w]
    lo, hi = field.min(), field.max()
    return ((field - lo) / (hi - lo + 1e-12)).astype(np.float32)


def depth_proxy(shape: tuple[int, int], rng: np.random.Generator) -> np.ndarray:
    """A smooth scene-depth proxy in [0, 1]: far at the top (outdoor horizon), plus a smooth
    random field so that depth also varies across the image."""
    h, w = shape
    ramp = np.linspace(1.0, 0.0, h, dtype=np.float32)[:, None] * np.ones((1, w), np.float32)
    mix = rng.uniform(0.3, 0.7)
    return (mix * ramp + (1 - mix) * smooth_field(shape, rng)).astype(np.float32)


def haze(img: Image, seed: int, beta: float | None = None, airlight: float | Sequence[float] | None = None,
         depth: np.ndarray | None = None) -> Image:
    """Haze by the atmospheric scattering model ``I = J·t + A·(1 − t)``, ``t = exp(−β·d)``.

    ``J`` is the clean image, ``A`` the atmospheric light (a scalar or an RGB triple), ``d``
    a depth map (H×W, ≥ 0; :func:`depth_proxy` when ``None``) and ``β`` the scattering
    coefficient. Where ``d = 0``, ``t = 1`` and the image is left untouched. Drawn from the
    seed when ``None``: β U(0.6, 2.0) (on the [0, 1] depth proxy: t down to 0.14, like
    SOTS-outdoor), A U(0.75, 0.95) with a ±0.03 colour tint.
    """
    img = _check(img)
    rng = _rng(seed)
    beta = rng.uniform(0.6, 2.0) if beta is None else beta
    if airlight is None:
        airlight = rng.uniform(0.75, 0.95) + rng.uniform(-0.03, 0.03, 3)
    a = np.broadcast_to(np.asarray(airlight, np.float32), (3,))
    d = depth_proxy(img.shape[:2], rng) if depth is None else np.asarray(depth, np.float32)
    if d.shape != img.shape[:2]:
        raise ExpertirError(f"depth map shape {d.shape} does not match the image {img.shape[:2]}")
    t = np.exp(-float(beta) * d)[..., None]
    return _finish(img * t + a * (1.0 - t))


# --------------------------------------------------------------------------- blur
def motion_kernel(rng: np.random.Generator, size: int = 21, steps: int = 64,
                  intensity: float | None = None) -> np.ndarray:
    """A random camera-shake kernel (size×size, sums to 1) from a random trajectory.

    The trajectory follows Boracchi & Foi (2012): a 2-D path whose velocity keeps its
    direction (inertia) and receives Gaussian kicks and occasional sharp turns
    (``intensity`` in [0, 1], drawn U(0, 1) when ``None``); the path is scaled to fit the
    kernel and splatted with bilinear weights at every step (equal exposure per step).
    """
    intensity = rng.uniform(0, 1) if intensity is None else intensity
    pos = np.zeros(2)
    vel = np.exp(1j * rng.uniform(0, 2 * np.pi))
    vel = np.array([vel.real, vel.imag])
    path = [pos.copy()]
    for _ in range(steps - 1):
        if rng.random() < 0.1 * intensity:  # abrupt shake
            vel = -vel * rng.uniform(0.5, 1.0)
        vel = vel + rng.normal(0, 0.3 + 0.7 * intensity, 2) * 0.2
        vel = vel / max(np.linalg.norm(vel), 1e-6)
        pos = pos + vel
        path.append(pos.copy())
    path = np.array(path)
    path -= path.mean(axis=0)
    extent = np.abs(path).max()
    path *= (size / 2 - 1.5) / max(extent, 1e-6)
    path += size // 2
    kernel = np.zeros((size, size), np.float64)
    for x, y in path:
        x0, y0 = int(np.floor(x)), int(np.floor(y))
        fx, fy = x - x0, y - y0
        for dx, dy, wgt in ((0, 0, (1 - fx) * (1 - fy)), (1, 0, fx * (1 - fy)),
                            (0, 1, (1 - fx) * fy), (1, 1, fx * fy)):
            if 0 <= y0 + dy < size and 0 <= x0 + dx < size:
                kernel[y0 + dy, x0 + dx] += wgt
    return (kernel / kernel.sum()).astype(np.float32)


def motion_blur(img: Image, seed: int, kernel: np.ndarray | None = None,
                size: int | None = None, intensity: float | None = None) -> Image:
    """Motion blur ``y = k ∗ x`` with a random camera-trajectory kernel (GoPro-like shake).

    ``kernel`` (2-D, normalised to sum 1) is used as given; otherwise :func:`motion_kernel`
    draws one of ``size`` pixels (odd, U{9, …, 31} when ``None``). The convolution uses
    reflected borders, so a constant image stays constant.
    """
    img = _check(img)
    rng = _rng(seed)
    if kernel is None:
        size = int(rng.integers(4, 16)) * 2 + 1 if size is None else int(size) | 1
        kernel = motion_kernel(rng, size, intensity=intensity)
    kernel = np.asarray(kernel, np.float32)
    kernel = kernel / kernel.sum()
    out = cv2.filter2D(img, -1, kernel[::-1, ::-1], borderType=cv2.BORDER_REFLECT)
    return _finish(out)


# --------------------------------------------------------------------------- low light
def low_light(img: Image, seed: int, gamma: float | None = None, scale: float | None = None,
              shot: float | None = None, read: float | None = None) -> Image:
    """Low light: exposure/gamma darkening plus Poisson–Gaussian sensor noise (LOL-like).

    Darkening: ``L = scale · x^gamma`` (less light and a steeper tone curve, as in
    synthetic low-light pairs). Noise, the heteroscedastic Gaussian approximation of the
    Poisson–Gaussian sensor model: ``y = L + sqrt(shot·L + read²)·n``, ``n ~ N(0, 1)``.
    Drawn from the seed when ``None``: gamma U(1.2, 2.0), scale U(0.1, 0.35), shot
    U(1e-4, 2e-3), read U(0.002, 0.01).
    """
    img = _check(img)
    rng = _rng(seed)
    gamma = rng.uniform(1.2, 2.0) if gamma is None else gamma
    scale = rng.uniform(0.1, 0.35) if scale is None else scale
    shot = rng.uniform(1e-4, 2e-3) if shot is None else shot
    read = rng.uniform(0.002, 0.01) if read is None else read
    dark = float(scale) * np.power(img, float(gamma))
    std = np.sqrt(float(shot) * dark + float(read) ** 2)
    return _finish(dark + std * rng.standard_normal(img.shape).astype(np.float32))


def dark_scene(img: Image, seed: int, gamma: float | None = None) -> Image:
    """A dark scene, properly exposed: ``x ** gamma`` (``gamma`` U(1.5, 3.0) when ``None``).

    What a camera records of a dark subject (a black machine, a night street under lamps):
    most of the image is dark, but the white point stays where it was (highlights still
    reach the top of the range) and no noise is added. An underexposed photo
    (:func:`low_light`) differs exactly there: its highlights are scaled down and it carries
    sensor noise. The training recipe uses it as a *scene* of the ``clean`` task (the image
    and its target both darkened), so that a dark photo is left alone rather than brightened.
    """
    img = _check(img)
    gamma = _rng(seed).uniform(1.5, 3.0) if gamma is None else gamma
    return _finish(np.power(img, float(gamma)))


# --------------------------------------------------------------------------- by name
def _random_noise(img: Image, seed: int) -> Image:
    """Gaussian noise with σ drawn U(10, 50) from the seed (for the mixed sets)."""
    sigma = _rng(sub_seed(seed, 1)).uniform(10, 50)
    return gaussian_noise(img, sigma, seed)


#: Short names of the single degradations, each ``fn(img, seed)`` with random strength.
DEGRADATIONS: dict[str, Callable[[Image, int], Image]] = {
    "noise": _random_noise,
    "rain": rain,
    "haze": haze,
    "blur": motion_blur,
    "lowlight": low_light,
}

#: Physical order of a chain: the scene and atmosphere first, then the camera and sensor.
PHYSICAL_ORDER = ["haze", "rain", "blur", "lowlight", "noise"]


def _names(names: str | Sequence[str]) -> list[str]:
    names = names.split("+") if isinstance(names, str) else list(names)
    unknown = [n for n in names if n not in DEGRADATIONS]
    if unknown or not names:
        raise ExpertirError(f"unknown degradation(s) {unknown or names!r} "
                            f"(known: {', '.join(DEGRADATIONS)})")
    return names


def compose(img: Image, seed: int, names: str | Sequence[str]) -> Image:
    """A compositional chain, e.g. ``"haze+rain"`` or ``["lowlight", "noise"]``.

    The degradations are applied in :data:`PHYSICAL_ORDER` whatever order they are given in
    (haze and rain happen in the scene, blur in the lens/exposure, darkness and noise in
    the sensor), each with its own seed derived from ``seed``, as in CDD-11's composites.
    """
    out = _check(img)
    chosen = set(_names(names))
    for k, name in enumerate(n for n in PHYSICAL_ORDER if n in chosen):
        out = DEGRADATIONS[name](out, sub_seed(seed, 100 + k))
    return out


def soft_masks(shape: tuple[int, int], count: int, rng: np.random.Generator,
               softness: float = 0.08) -> np.ndarray:
    """``count`` soft region masks (count×H×W, summing to 1 at every pixel).

    Each region gets a smooth random field; the masks are a softmax over those fields with
    temperature ``softness`` (smaller = sharper transitions), so every region is a few
    blobs with a blurred border.
    """
    if count == 1:
        return np.ones((1, *shape), np.float32)
    fields = np.stack([smooth_field(shape, rng, scale=0.15) for _ in range(count)])
    logits = (fields - fields.max(axis=0, keepdims=True)) / softness
    weights = np.exp(logits)
    return (weights / weights.sum(axis=0, keepdims=True)).astype(np.float32)


def spatially_varying(img: Image, seed: int, names: str | Sequence[str] | None = None,
                      softness: float = 0.08, return_masks: bool = False):
    """Spatially varying degradation: ``y = Σ_k m_k · D_k(x)`` with soft masks ``m_k``.

    ``names`` lists one degradation (or a ``+`` chain) per region, e.g.
    ``["rain", "haze"]``, ``["noise", "noise"]`` (the same type at two random strengths) or
    ``["haze+rain", "lowlight"]``; when ``None`` two different single degradations are drawn
    from the seed. Each region's degradation has its own seed; the masks come from
    :func:`soft_masks`. With ``return_masks=True`` returns ``(image, masks)``.
    """
    img = _check(img)
    rng = _rng(seed)
    if names is None:
        names = list(rng.choice(list(DEGRADATIONS), size=2, replace=False))
    names = [names] if isinstance(names, str) else list(names)
    masks = soft_masks(img.shape[:2], len(names), rng, softness)
    out = np.zeros_like(img)
    for k, name in enumerate(names):
        out += masks[k][..., None] * compose(img, sub_seed(seed, 200 + k), name)
    out = _finish(out)
    return (out, masks) if return_masks else out


class FixedNoise:
    """``fn(img, seed)`` adding protocol Gaussian noise of a fixed σ (:func:`protocol_noise`:
    gray noise on gray images); picklable, for workers."""

    def __init__(self, sigma: float):
        self.sigma = sigma

    def __call__(self, img: Image, seed: int) -> Image:
        return protocol_noise(img, self.sigma, seed)

    def __repr__(self) -> str:
        return f"FixedNoise(sigma={self.sigma})"


def unchanged(img: Image, seed: int) -> Image:
    """The ``clean`` task: the image itself (a copy)."""
    return _check(img).copy()


#: Task id → ``fn(img, seed)``: the synthesis used to train (and to build synthetic test
#: sets) for every task. Denoising has a fixed σ; the others draw their parameters from the
#: seed; ``clean`` leaves the image as it is.
SYNTHESIZERS: dict[str, Callable[[Image, int], Image]] = {
    "denoise_15": FixedNoise(15),
    "denoise_25": FixedNoise(25),
    "denoise_50": FixedNoise(50),
    "derain": rain,
    "dehaze": haze,
    "deblur": motion_blur,
    "lowlight": low_light,
    "clean": unchanged,
}
