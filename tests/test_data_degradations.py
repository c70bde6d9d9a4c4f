"""Degradations: deterministic per seed, and changing the image by the modelled amount."""

import numpy as np
import pytest

from expertir.data import degradations as D
from expertir.errors import ExpertirError
from expertir.imageio import save_rgb


def _image(h=64, w=64, seed=0):
    """A smooth colour test image with texture, values well inside (0, 1)."""
    y, x = np.mgrid[0:h, 0:w] / max(h, w)
    rng = np.random.default_rng(seed)
    img = np.stack([0.3 + 0.4 * x, 0.3 + 0.4 * y, 0.5 + 0.2 * np.sin(6 * x)], axis=2)
    return np.clip(img + 0.02 * rng.standard_normal((h, w, 3)), 0, 1).astype(np.float32)


@pytest.mark.parametrize("task", [t for t in D.SYNTHESIZERS if t != "clean"])
def test_synthesizers_are_pure_functions_of_the_seed(task):
    img = _image()
    before = img.copy()
    a, b, c = (D.SYNTHESIZERS[task](img, s) for s in (7, 7, 8))
    assert np.array_equal(img, before)  # input untouched
    assert a.dtype == np.float32 and a.shape == img.shape
    assert 0.0 <= a.min() and a.max() <= 1.0
    assert np.array_equal(a, b)
    assert not np.array_equal(a, c)
    assert np.abs(a - img).mean() > 0.004


def test_noise_std_matches_sigma_before_clipping():
    img = np.full((160, 160, 3), 0.5, np.float32)  # far from 0 and 1: no clipping at σ=25
    for sigma in (15, 25, 50):
        noisy = D.gaussian_noise(img, sigma, seed=0, quantize=False)
        std = float((noisy - img).std() * 255)
        assert abs(std - sigma) / sigma < 0.03, (sigma, std)


def test_noise_follows_the_promptir_formula():
    img = (np.arange(24 * 24 * 3).reshape(24, 24, 3) % 256).astype(np.float32) / 255.0
    clean_u8 = np.round(img * 255)
    np.random.seed(0)  # PromptIR: np.random.seed(0) then np.random.randn per image
    expected = np.clip(clean_u8 + np.random.randn(*img.shape) * 25, 0, 255).astype(np.uint8)
    assert np.array_equal(D.gaussian_noise(img, 25, seed=0), expected / np.float32(255))


def test_haze_leaves_zero_depth_untouched_and_follows_the_scattering_model():
    img = _image()
    depth = np.zeros(img.shape[:2], np.float32)
    depth[:, 32:] = np.linspace(0.2, 1.0, 32)[None, :]
    out = D.haze(img, seed=3, beta=1.5, airlight=0.9, depth=depth)
    assert np.array_equal(out[:, :32], img[:, :32])  # t = exp(0) = 1
    t = np.exp(-1.5 * depth[:, 32:])[..., None]
    np.testing.assert_allclose(out[:, 32:], img[:, 32:] * t + 0.9 * (1 - t), atol=1e-6)


def test_rain_only_adds_light_streaks():
    img = _image()
    out = D.rain(img, seed=1, density=0.01, brightness=0.8)
    assert np.all(out >= img - 1e-7)  # additive layer
    changed = np.abs(out - img).max(axis=2) > 0.05
    assert 0.01 < changed.mean() < 0.6
    unclipped = out.max(axis=2) < 1.0
    streak = out - img  # the same streak layer on R, G and B where nothing clipped
    assert np.allclose(streak[..., 0][unclipped], streak[..., 1][unclipped], atol=1e-6)


def test_motion_blur_kernel_and_constant_image():
    k = D.motion_kernel(np.random.default_rng(0), size=15)
    assert k.shape == (15, 15) and abs(k.sum() - 1) < 1e-5 and k.min() >= 0
    assert (k > 0).sum() > 5  # a trajectory, not a single point
    flat = np.full((40, 40, 3), 0.3, np.float32)
    np.testing.assert_allclose(D.motion_blur(flat, seed=2), flat, atol=1e-6)
    img = _image()
    assert np.abs(D.motion_blur(img, seed=2) - img).mean() > 0.001


def test_low_light_darkening_model():
    img = _image()
    dark = D.low_light(img, seed=0, gamma=2.0, scale=0.2, shot=0.0, read=0.0)
    np.testing.assert_allclose(dark, 0.2 * img ** 2.0, atol=1e-6)
    noisy = D.low_light(img, seed=0)
    assert noisy.mean() < 0.5 * img.mean()


def test_compose_uses_physical_order():
    img = _image()
    a = D.compose(img, 5, "haze+rain")
    b = D.compose(img, 5, ["rain", "haze"])
    assert np.array_equal(a, b)
    assert not np.array_equal(a, D.compose(img, 5, "haze"))
    with pytest.raises(Exception, match="unknown degradation"):
        D.compose(img, 5, "snow")


def test_spatially_varying_regions_follow_soft_masks():
    img = _image(96, 96)
    out, masks = D.spatially_varying(img, 4, ["lowlight", "rain"], return_masks=True)
    assert masks.shape == (2, 96, 96)
    np.testing.assert_allclose(masks.sum(axis=0), 1.0, atol=1e-5)
    assert 0.05 < masks[0].mean() < 0.95  # both regions present
    region0 = masks[0] > 0.999
    assert region0.any()
    only_dark = D.compose(img, D.sub_seed(4, 200), "lowlight")
    np.testing.assert_allclose(out[region0], only_dark[region0], atol=2e-3)
    assert np.array_equal(out, D.spatially_varying(img, 4, ["lowlight", "rain"]))


def test_protocol_noise_keeps_gray_images_gray_and_colour_noise_independent():
    gray = np.repeat(_image()[..., :1], 3, axis=2)
    noisy = D.protocol_noise(gray, 25, seed=3)
    assert D.is_gray(noisy) and not np.array_equal(noisy, gray)
    assert np.array_equal(noisy[..., :1], D.gaussian_noise(gray[..., :1], 25, seed=3))
    colour = _image()
    noisy = D.protocol_noise(colour, 25, seed=3)
    assert np.array_equal(noisy, D.gaussian_noise(colour, 25, seed=3))
    assert not D.is_gray(D.protocol_noise(gray + np.float32(0.001) * np.arange(3), 25, seed=3))
    # the training synthesizers follow the same rule as the gray test protocol
    assert D.is_gray(D.SYNTHESIZERS["denoise_25"](gray, 5))


def _streak_bank(tmp_path):
    for i in range(3):
        layer = np.zeros((70, 90))
        layer[:, 5 + 7 * i::20] = 0.8
        save_rgb(tmp_path / f"{i}.png", layer)
    (tmp_path / "bad.png").write_bytes(b"")
    return D.StreakLayers([tmp_path])


def test_streak_layers_skip_an_unreadable_file_with_a_one_line_reason(tmp_path):
    bank = _streak_bank(tmp_path)
    assert len(bank) == 3
    assert len(bank.problems) == 1 and "bad.png" in bank.problems[0] and "\n" not in bank.problems[0]


def test_layer_rain_brightens_saturates_at_white_and_is_seeded(tmp_path):
    bank = _streak_bank(tmp_path)
    img = np.random.default_rng(0).uniform(0, 1, (48, 64, 3)).astype(np.float32)
    out = D.layer_rain(img, 3, bank, blur=0.0, veil=0.0)
    assert out.shape == img.shape and out.dtype == np.float32
    assert (out >= img - 1e-6).all() and (out > img + 0.05).mean() > 0.02  # streaks added
    white = np.ones_like(img)
    assert np.allclose(D.layer_rain(white, 3, bank, blur=0.0, veil=0.0), 1.0)  # screen blend
    fn = D.LayerRain(bank)
    assert np.array_equal(fn(img, 5), fn(img, 5)) and not np.array_equal(fn(img, 5), fn(img, 6))
    for seed in range(8):  # default draws: between the streaks the image is left as it was
        out = fn(img, seed)
        away = (out - img).max(axis=2) < 1 / 255
        assert away.mean() > 0.2 and np.abs(out - img)[away].max() < 1 / 255
    with pytest.raises(ExpertirError, match="streak layer"):
        D.layer_rain(img, 0, D.StreakLayers([]))


def test_layer_rain_intensity_range_and_procedural_share(tmp_path):
    bank = _streak_bank(tmp_path)
    img = np.full((48, 64, 3), 0.3, np.float32)
    default = D.LayerRain(bank)
    for seed in range(4):  # the default range is the layer_rain default: same draws
        assert np.array_equal(default(img, seed), D.layer_rain(img, seed, bank))
    strong = D.LayerRain(bank, intensity=(1.5, 2.0))
    brighten = lambda fn: np.mean([(fn(img, s) - img).mean() for s in range(6)])  # noqa: E731
    assert brighten(strong) > 1.2 * brighten(default)
    assert strong(img, 0).max() <= 1.0
    mixed = D.LayerRain(bank, procedural_share=0.5)
    kinds = [np.array_equal(mixed(img, s), D.rain(img, s)) for s in range(40)]
    assert 8 < sum(kinds) < 32  # about half procedural, chosen by the seed
    assert all(np.array_equal(mixed(img, s), default(img, s)) for s, k in enumerate(kinds) if not k)
    for bad in ({"intensity": (0.0, 1.0)}, {"intensity": (1.0, 0.5)}, {"procedural_share": 1.5}):
        with pytest.raises(ExpertirError):
            D.LayerRain(bank, **bad)


def test_dark_scene_keeps_black_and_white_and_darkens_the_rest_without_noise():
    ramp = np.repeat(np.linspace(0, 1, 11, dtype=np.float32)[None, :, None], 3, axis=2)
    out = D.dark_scene(ramp, seed=0)
    assert out[0, 0, 0] == 0 and out[0, -1, 0] == 1  # the white point stays
    assert np.all(out[0, 1:-1] < ramp[0, 1:-1]) and np.all(np.diff(out[0, :, 0]) > 0)  # darker, same order
    np.testing.assert_allclose(D.dark_scene(ramp, 0, gamma=2.0), ramp ** 2, atol=1e-6)


def test_clean_synthesizer_is_the_identity():
    img = np.random.default_rng(1).uniform(0, 1, (8, 8, 3)).astype(np.float32)
    assert np.array_equal(D.SYNTHESIZERS["clean"](img, 0), img)
