import numpy as np
import pytest
import torch
from skimage.color import rgb2ycbcr
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from expertir.metrics import crop_to_multiple, protocol_line, psnr, ssim, torch_psnr


@pytest.mark.parametrize("seed", range(3))
def test_psnr_ssim_equal_scikit_image_reference(seed):
    rng = np.random.default_rng(seed)
    clean = rng.random((48, 64, 3))
    noisy = np.clip(clean + rng.normal(0, 0.1, clean.shape), 0, 1)
    assert abs(psnr(noisy, clean) - peak_signal_noise_ratio(clean, noisy, data_range=1)) < 1e-6
    assert abs(ssim(noisy, clean) - structural_similarity(clean, noisy, data_range=1, channel_axis=2)) < 1e-6
    y = lambda a: rgb2ycbcr(a)[..., 0] / 255
    assert abs(psnr(noisy, clean, y_channel=True) - peak_signal_noise_ratio(y(clean), y(noisy), data_range=1)) < 1e-6
    assert abs(ssim(noisy, clean, y_channel=True) - structural_similarity(y(clean), y(noisy), data_range=1)) < 1e-6


def test_crop_to_multiple_of_16_is_centred_like_promptir():
    img = np.arange(37 * 53).reshape(37, 53)
    out = crop_to_multiple(img, 16)
    assert out.shape == (32, 48)
    assert out[0, 0] == img[2, 2]  # 37 % 16 = 5 -> start 2; 53 % 16 = 5 -> start 2
    rng = np.random.default_rng(0)
    a, b = rng.random((37, 53, 3)), rng.random((37, 53, 3))
    assert psnr(a, b) == pytest.approx(peak_signal_noise_ratio(crop_to_multiple(b), crop_to_multiple(a), data_range=1))


def test_torch_psnr_matches():
    rng = np.random.default_rng(1)
    a, b = rng.random((2, 3, 16, 16)), rng.random((2, 3, 16, 16))
    got = torch_psnr(torch.tensor(a), torch.tensor(b))
    ref = [peak_signal_noise_ratio(b[i], a[i], data_range=1) for i in range(2)]
    assert np.allclose(got.numpy(), ref, atol=1e-6)


def test_protocol_line_names_the_space():
    assert "RGB" in protocol_line() and "Y" in protocol_line(y_channel=True)
    with pytest.raises(ValueError, match="shape mismatch"):
        psnr(np.zeros((4, 4, 3)), np.zeros((4, 5, 3)))


def test_seam_ratio_is_one_without_seams_and_grows_with_blockwise_changes():
    from expertir.metrics import seam_ratio

    rng = np.random.default_rng(0)
    img = rng.uniform(0.2, 0.8, (64, 80, 3))
    assert seam_ratio(img, img) == pytest.approx(1.0)
    assert seam_ratio(img * 0.9 + 0.05, img) == pytest.approx(1.0)  # a global change adds no seam
    blocks = img.copy()
    for y in range(0, 64, 16):  # brighten every other 16-px region: visible region borders
        for x in range(0, 80, 16):
            if (y // 16 + x // 16) % 2:
                blocks[y:y + 16, x:x + 16] += 0.15
    assert seam_ratio(np.clip(blocks, 0, 1), img) > 1.3
