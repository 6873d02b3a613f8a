import pytest
import torch

from marsvision.nets.models import _lite_weights_file, create_model, model_defaults


def test_unknown_name_lists_valid_ones():
    with pytest.raises(
        ValueError, match="efficientnet_lite0, efficientnet_lite0_multilevel, efficientnet_lite2, small_cnn"
    ):
        create_model("resnet9000", 3)


def test_lite0_loads_packaged_imagenet_weights():
    model = create_model("efficientnet_lite0", 24)
    src = torch.load(_lite_weights_file(0), map_location="cpu", weights_only=True)
    assert torch.equal(model.conv_stem.weight, src["_conv_stem.weight"])
    assert model.get_classifier().out_features == 24
    assert model_defaults("efficientnet_lite0")["input_size"] == 224
    with torch.no_grad():
        assert model.eval()(torch.zeros(1, 3, 64, 64)).shape == (1, 24)


def test_small_cnn_shapes():
    assert create_model("small_cnn", 5, pretrained=False)(torch.zeros(2, 3, 64, 64)).shape == (2, 5)


def test_multilevel_lite0_concatenates_pooled_stages():
    model = create_model("efficientnet_lite0_multilevel", 24).eval()
    plain = create_model("efficientnet_lite0", 24).eval()
    x = torch.randn(2, 3, 96, 96)
    with torch.no_grad():
        feats = model.forward_features(x)
        assert feats.shape == (2, 1280 + 192 + 320) and model(x).shape == (2, 24)
        # the first 1280 features are exactly the plain Lite0's pooled head features
        torch.testing.assert_close(feats[:, :1280], plain.forward_head(plain.forward_features(x), pre_logits=True))
        maps = model.feature_maps(x)  # head, then the tapped stages, all 96/32 = 3 on a side
        assert [tuple(m.shape) for m in maps] == [(2, 1280, 3, 3), (2, 192, 3, 3), (2, 320, 3, 3)]
        torch.testing.assert_close(torch.cat([m.mean((2, 3)) for m in maps], 1), feats)
    model.reset_classifier(0)
    with torch.no_grad():
        assert model(x).shape == (2, 1792)
