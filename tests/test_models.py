import pytest
import torch

from marsvision.models import _lite_weights_file, create_model, model_defaults


def test_unknown_name_lists_valid_ones():
    with pytest.raises(ValueError, match="efficientnet_lite0, efficientnet_lite2, small_cnn"):
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
