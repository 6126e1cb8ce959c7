"""--style-loss gram|meancov|neighbors: each a term of the one objective (issue 15).

Per loss: zero when the output's features are the style's (same image, same size), falls
under a few optimizer steps, a finite gradient on a constant image, whole-image and tiled
evaluation agree (meancov; neighbors refuses tiles), and the option reaches every front end.
"""

import json

import pytest
import torch

from nstyle.core import regions, tiling
from nstyle.core.tiles import make_tiles
from nstyle.options.layers import halo_for, receptive_radius
from nstyle.core.losses import neighbors
from nstyle.core.losses.meancov import eigh_one_thread, meancov_distance, moments
from nstyle.cli.main import main
from nstyle.options.config import Config
from nstyle.core.stylizer import Stylizer
from nstyle.core.image_tensors import resize_tensor
from nstyle.errors import BadOption, TooLarge
from nstyle.core.objective import for_scale, with_total
from nstyle.core.plan import schedule
from nstyle.core.vgg import preprocess
from tests.support.tensors import to_t

KINDS = ("gram", "meancov", "neighbors")
LAYERS = "relu1_1,relu2_1,relu3_1"  # shallow: fast, and tiles need 16 px halos only


def _stylizer(kind: str, **options) -> Stylizer:
    options = {"size": 64, "style_layers": LAYERS, "content_layers": "relu3_1", "precision": "fp32",
               "content_weight": 0.0, "tv_weight": 0.0, "style_loss": kind, **options}
    return Stylizer(Config.from_options(**options), torch.device("cpu"))


def _objective(st: Stylizer, style_rgb: torch.Tensor, start_bgr: torch.Tensor, masks=(None,),
               styles=None, tile: int = 0):
    """The objective of a one-scale run at ``start_bgr``'s size, its neighbours matched to it."""
    h, w = start_bgr.shape[-2:]
    styles = styles or [style_rgb]
    objective = for_scale(st.config.loss, st.network.content_targets(start_bgr, tile),
                          st.network.style_regions(styles, list(masks), None, 64, h, w, tile))
    if st.config.loss.style_loss == "neighbors":
        features = st.vgg(start_bgr, list(objective.layers))
        style = tuple(t.matched(features, (h, w), objective.regions) for t in objective.style)
        objective = type(objective)(objective.content, style, objective.regions, objective.tv_weight)
    return objective


def _style_total(objective, st, image) -> torch.Tensor:
    terms = objective.evaluate(st.vgg(image, list(objective.layers)), image)
    return sum(v for k, v in terms.items() if k.startswith("style."))


@pytest.mark.parametrize("kind", KINDS)
def test_zero_when_the_output_is_the_style_image(kind, style_img, content_img):
    st = _stylizer(kind, style_margin=0)  # the whole painting is the target
    style = to_t(style_img)
    style_bgr = preprocess(resize_tensor(style, 64))
    at_style = float(_style_total(_objective(st, style, style_bgr), st, style_bgr))
    photo = preprocess(resize_tensor(to_t(content_img), 64))
    elsewhere = float(_style_total(_objective(st, style, photo), st, photo))
    assert elsewhere > 0
    assert abs(at_style) <= 1e-5 * elsewhere, (at_style, elsewhere)


@pytest.mark.parametrize("kind", KINDS)
def test_falls_under_a_few_optimizer_steps(kind, content_img, style_img):
    st = _stylizer(kind, content_weight=1.0)
    x = preprocess(resize_tensor(to_t(content_img), 32)).requires_grad_(True)
    objective = _objective(st, to_t(style_img), x.detach())
    optimizer = torch.optim.Adam([x], lr=10.0)  # scale-free: the losses differ by 1e6
    values = []
    for _ in range(5):
        optimizer.zero_grad()
        total = _style_total(objective, st, x)
        total.backward()
        values.append(float(total.detach()))
        optimizer.step()
    assert values[-1] < 0.9 * values[0], values


@pytest.mark.parametrize("kind", KINDS)
def test_finite_gradient_on_a_constant_image(kind, style_img):
    st = _stylizer(kind)
    flat = preprocess(torch.full((1, 3, 40, 48), 0.5))
    objective = _objective(st, to_t(style_img), flat)
    x = flat.clone().requires_grad_(True)
    total = _style_total(objective, st, x)
    total.backward()
    assert torch.isfinite(total) and float(total.detach()) > 0
    assert torch.isfinite(x.grad).all() and float(x.grad.abs().max()) > 0


def test_meancov_tiled_equals_whole_with_regions_and_blend(content_img, style_img, style_img2):
    """Four 32 px tiles (16 px halos) over 64 x 48, a masked style beside two blended ones."""
    st = _stylizer("meancov", content_weight=1.0, style_blend_weights=(1.0, 2.0, 1.0),
                   style_layers="relu1_1,relu2_1", content_layers="relu2_1")
    bgr = preprocess(resize_tensor(to_t(content_img), 64))
    h, w = bgr.shape[-2:]
    mask = torch.zeros(1, 1, h, w)
    mask[..., : w // 3] = 1
    start = bgr + 30 * torch.randn(bgr.shape, generator=torch.Generator().manual_seed(0))
    styles = [to_t(style_img), to_t(style_img2), to_t(style_img).flip(-1)]
    values, grads = [], []
    for tile in (0, 32):
        objective = _objective(st, None, bgr, masks=(mask, None, None), styles=styles, tile=tile)
        image = start.clone().requires_grad_(True)
        if tile:
            tiles = make_tiles(h, w, tile, 16)
            assert len(tiles) == 4
            terms, grad = tiling.loss_and_grad(st.vgg, image, tiles, objective)
        else:
            terms = objective.evaluate(st.vgg(image, list(objective.layers)), image)
            terms["total"].backward()
            grad = image.grad
        if tile:
            terms = with_total(dict(terms))
        values.append({k: float(v.detach()) for k, v in terms.items()})
        grads.append(grad)
    assert [k for k in values[0] if k.startswith("style.")] == ["style.relu1_1", "style.relu2_1"]
    for k in values[0]:
        assert values[1][k] == pytest.approx(values[0][k], rel=1e-4), k
    assert float((grads[1] - grads[0]).norm() / grads[0].norm()) < 1e-4


def test_meancov_matches_the_closed_form_and_its_gradient():
    """The 2-Wasserstein distance of two Gaussians against scipy's matrix square root, and
    the custom backward of tr(M^½) against finite differences (float64)."""
    scipy_linalg = pytest.importorskip("scipy.linalg")
    torch.manual_seed(0)
    f, s = torch.randn(1, 6, 5, 5, dtype=torch.float64), torch.randn(1, 6, 7, 7, dtype=torch.float64) * 2 + 1
    stats, target = moments(f), moments(s)
    cov, cov_s = stats.covariance[0].numpy(), target.covariance[0].numpy()
    root_s = scipy_linalg.sqrtm(cov_s).real
    expected = (((stats.mean - target.mean) ** 2).sum().item() + cov.trace() + cov_s.trace()
                - 2 * scipy_linalg.sqrtm(root_s @ cov @ root_s).real.trace()) / 6
    assert float(meancov_distance(stats, target)) == pytest.approx(expected, rel=1e-5)
    x = f.clone().requires_grad_(True)
    assert torch.autograd.gradcheck(
        lambda t: meancov_distance(moments(t), target).double(), (x,), atol=1e-4, rtol=1e-3)


def test_neighbors_search_is_exact_in_chunks(monkeypatch):
    torch.manual_seed(0)
    bank = torch.randn(300, 8)
    columns = torch.randn(1, 8, 5, 7)
    whole = neighbors.nearest(columns, bank)
    monkeypatch.setattr(neighbors, "SEARCH_CHUNK_BYTES", 4 * 300 * 3)  # 3 rows at a time
    assert torch.equal(neighbors.nearest(columns, bank), whole)
    q = columns[0].flatten(1).t()
    q = q - q.mean(0)
    r = bank - bank.mean(0)
    cos = (q / q.norm(dim=1, keepdim=True)) @ (r / r.norm(dim=1, keepdim=True)).t()
    assert torch.equal(whole[0].flatten(1).t(), bank[cos.argmax(1)])


def test_neighbors_refuse_tiles_in_one_line(content_img, style_img):
    with pytest.raises(BadOption, match="cannot run tiled"):
        schedule(Config.from_options(style_loss="neighbors", tile_size=64), (64, 64))
    st = _stylizer("neighbors", size=1024, memory_limit=1.0)
    with pytest.raises(TooLarge, match="cannot run tiled") as err:
        st.plan(torch.rand(1, 3, 1024, 1024), [to_t(style_img)])
    assert "\n" not in str(err.value)


def test_a_run_with_masks_blend_and_scales_per_loss(content_img, style_img, style_img2):
    """Two scales, a masked style and a keep mask: every loss runs end to end, reports its
    terms and leaves the kept pixels alone."""
    content = to_t(content_img)
    h, w = content.shape[-2:]
    mask = torch.zeros(1, 1, h, w)
    mask[..., : w // 2] = 1
    keep = torch.zeros(1, 1, h, w)
    keep[..., : h // 4, :] = 1
    for kind in ("meancov", "neighbors"):
        st = _stylizer(kind, scales=(32, 64), scale_iterations=(3, 2), content_weight=1.0, tolerance=0.0)
        result = st.run(content, [to_t(style_img), to_t(style_img2)], style_masks=[mask, None],
                        keep_mask=keep)
        names = [k for k in result.losses if k.startswith("style.")]
        assert names == (["style.neighbors"] if kind == "neighbors" else
                         ["style.relu1_1", "style.relu2_1", "style.relu3_1"])
        assert all(torch.isfinite(torch.tensor(v)) for v in result.losses.values())
        assert result.iterations == 5 and tuple(result.image.shape[-2:]) == (h, w)
        kept = (result.image - resize_tensor(content, 64))[..., : h // 4 - 2, :]
        assert float(kept.abs().max()) < 0.02


def test_cli_style_loss_is_recorded_and_validated(tmp_path, content_path, style_path, capsys):
    out = tmp_path / "out.png"
    assert main([str(content_path), str(style_path), "-o", str(out), "--size", "32",
                 "--iterations", "2", "--style-loss", "meancov", "-q"]) == 0
    record = json.loads((tmp_path / "out.png.json").read_text())
    assert record["config"]["loss"]["style_loss"] == "meancov"
    capsys.readouterr()
    assert main([str(content_path), str(style_path), "-o", str(tmp_path / "bad.png"),
                 "--style-loss", "wasserstein"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert "wasserstein" in err[-1] and "gram" in err[-1]
    assert not (tmp_path / "bad.png").exists()
    with pytest.raises(BadOption, match="style_loss must be one of"):
        Config.from_options(style_loss="WASSERSTEIN")


def test_concurrent_eigendecompositions_restore_the_thread_count(monkeypatch):
    """Service jobs run in threads; each eigh drops to one thread and must put back the
    process-wide count it found, never another job's temporary 1."""
    import time
    from concurrent.futures import ThreadPoolExecutor

    real_eigh = torch.linalg.eigh

    def slow_eigh(matrix):  # a real 512-channel eigh takes ~0.1 s: long enough to interleave
        time.sleep(0.005)
        return real_eigh(matrix)

    monkeypatch.setattr(torch.linalg, "eigh", slow_eigh)
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        matrix = torch.eye(8, dtype=torch.float64)
        with ThreadPoolExecutor(4) as pool:
            list(pool.map(lambda _: eigh_one_thread(matrix), range(64)))
        # torch keeps the count per OpenMP thread and seeds new threads from the last set:
        # a fresh thread (the next job) shows what the jobs left behind
        with ThreadPoolExecutor(1) as fresh:
            assert fresh.submit(torch.get_num_threads).result() == 2
    finally:
        torch.set_num_threads(before)


def test_neighbors_runs_restart_lbfgs_when_the_loss_rises_and_gram_runs_do_not(style_img):
    """The neighbors loss climbed into noise under plain L-BFGS (Golden Gate x The Scream);
    its runs restart from their best image (``engine.BestIterate``), Gram and meancov
    runs keep the optimizer their defaults were judged with."""
    from types import SimpleNamespace

    from nstyle.core.optimizer import restarts_on_rise

    lbfgs = torch.optim.LBFGS([torch.zeros(1, requires_grad=True)])
    adam = torch.optim.Adam([torch.zeros(1, requires_grad=True)])
    start = preprocess(torch.rand(1, 3, 48, 64, generator=torch.Generator().manual_seed(0)))
    for kind, restarts in (("gram", False), ("meancov", False), ("neighbors", True)):
        st = _stylizer(kind)
        step = SimpleNamespace(objective=_objective(st, to_t(style_img), start))
        assert restarts_on_rise(step, lbfgs) is restarts
        assert not restarts_on_rise(step, adam)
