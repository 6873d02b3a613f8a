import numpy as np
import torch

from marsvision.export.int8_tuning import quantised_convs, round_int8, tune_for_int8
from marsvision.nets.models import create_model
from marsvision.preprocess import normalize


def test_round_int8_is_per_channel_symmetric_and_commutes_with_bn_scale():
    torch.manual_seed(0)
    w = torch.randn(8, 4, 3, 3)
    q = round_int8(w)
    scale = w.abs().amax(dim=(1, 2, 3)) / 127  # (8,)
    steps = q / scale[:, None, None, None]
    torch.testing.assert_close(steps, steps.round())  # every weight on its channel's int8 grid
    torch.testing.assert_close(steps.abs().amax(dim=(1, 2, 3)), torch.full((8,), 127.0))
    # BN folding multiplies each output channel by one factor; rounding commutes with it, so tuning the
    # unfolded torch weight tunes what the ONNX quantiser stores for the folded one.
    bn = torch.rand(8) + 0.5
    torch.testing.assert_close(round_int8(w * bn[:, None, None, None]), q * bn[:, None, None, None])


def test_tuning_reduces_int8_rounding_error(mini_data):
    from marsvision.data.msl import MSLDataset, decode_many

    torch.manual_seed(0)
    paths = MSLDataset(mini_data).split("train").paths[:8]
    model = create_model("efficientnet_lite0", 5).eval()
    original = {k: v.clone() for k, v in model.state_dict().items()}
    x = torch.from_numpy(normalize(decode_many(paths, 64), (0.5,) * 3, (0.5,) * 3))

    def rounding_error(m) -> float:
        convs = quantised_convs(m, [0])
        saved = [c.weight.data.clone() for c in convs]
        with torch.no_grad():
            ref = create_model("efficientnet_lite0", 5).eval()
            ref.load_state_dict(original)
            target = ref(x)
            for c in convs:
                c.weight.data = round_int8(c.weight.data)
            err = float(((m(x) - target) ** 2).mean())
        for c, w in zip(convs, saved, strict=True):
            c.weight.data = w
        return err

    before = rounding_error(model)
    summary = tune_for_int8(
        model, paths, 64, (0.5,) * 3, (0.5,) * 3, float_convs=[0], epochs=10, lr=2e-5, batch_size=8, threads=1
    )
    assert summary["steps"] == 10 and summary["tuned_convs"] == len(quantised_convs(model, [])) - 1
    assert rounding_error(model) < 0.7 * before
    state = model.state_dict()
    assert not any("parametrizations" in k for k in state)  # plain weights again, ready to export
    assert torch.equal(state["conv_stem.weight"], original["conv_stem.weight"])  # kept float: untouched
    assert not torch.equal(state["conv_head.weight"], original["conv_head.weight"])
    assert np.isfinite(summary["loss_last"])
