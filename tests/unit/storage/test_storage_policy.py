"""The storage policy: local paths only inside the allowed roots, PVC claims as allowAnyPVC says,
http(s) hosts from the allow-list; refused at registration (InvalidArgument) and again at fetch
(StorageNotAllowed), with messages that say what to do."""

from __future__ import annotations

import io
import json
import tarfile
import zipfile
from pathlib import Path

import pytest

from kserve_mesh.core.errors import InvalidArgument, StorageNotAllowed, StorageNotFound, UnsafeArchive
from kserve_mesh.core.records import ModelInfo
from kserve_mesh.runtime.builtin.fetch import LocalFetcher, default_fetcher
from kserve_mesh.storage import ModelFetcher, StorageConfig, StoragePolicy, StorageResolver, model_check


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    (tmp_path / "models" / "iris").mkdir(parents=True)
    (tmp_path / "models" / "iris" / "model.string").write_text("iris")
    (tmp_path / "models" / "hello.string").write_text("hello")
    (tmp_path / "extra").mkdir()
    (tmp_path / "extra" / "x.string").write_text("extra")
    (tmp_path / "outside").mkdir()
    (tmp_path / "outside" / "secret.string").write_text("secret")
    return tmp_path


def policy(tree: Path, **kw: object) -> StoragePolicy:
    return StoragePolicy.of(models_dir=tree / "models", allow_local_paths=[tree / "extra"],
                            pvc_mount_root=tree / "pvc", **kw)  # type: ignore[arg-type]


def fetcher(tree: Path, config: StorageConfig | None = None, **kw: object) -> ModelFetcher:
    return ModelFetcher(config or StorageConfig.empty(), tree / "cache", policy=policy(tree, **kw))


# -- local paths ---------------------------------------------------------------------------------

def test_paths_inside_the_roots_are_served_in_place(tree: Path) -> None:
    f = fetcher(tree)
    assert f.fetch("a", str(tree / "models" / "hello.string")).read_text() == "hello"
    assert f.fetch("b", f"file://{tree}/extra/x.string").read_text() == "extra"
    assert f.fetch("c", "iris") == tree / "models" / "iris"  # relative: found in the first root
    assert not (tree / "cache").exists()  # nothing copied


@pytest.mark.parametrize("path", ["/etc/passwd", "/proc/self/environ", "../../../../etc/hostname",
                                  "file:///etc/passwd", "file://../../etc/passwd", "iris/../../outside/secret.string",
                                  "..", "iris/..\\..\\outside"])
def test_the_issue_reproducers_are_refused_at_fetch_and_at_registration(tree: Path, path: str) -> None:
    with pytest.raises(StorageNotAllowed, match="refused") as info:
        fetcher(tree).fetch("m", path)
    message = str(info.value)
    assert str(tree / "models") in message and "--allow-local-path" in message
    check = StorageResolver(StorageConfig.empty(), policy(tree)).check_model
    with pytest.raises(InvalidArgument, match="refused.*--allow-local-path"):
        check(ModelInfo("string", path))


def test_outside_path_message_names_path_roots_and_flag(tree: Path) -> None:
    with pytest.raises(StorageNotAllowed) as info:
        fetcher(tree).fetch("m", str(tree / "outside" / "secret.string"))
    assert str(info.value) == (
        f"local model path '{tree}/outside/secret.string' refused: it is outside the allowed folders; local "
        f"model paths must lie inside {tree}/models, {tree}/extra (start the process with --allow-local-path DIR "
        "to allow another folder)")


def test_no_roots_refuses_every_local_path_and_says_how_to_allow_one(tree: Path) -> None:
    for f in (ModelFetcher(StorageConfig.empty(), tree / "cache"), default_fetcher()):
        with pytest.raises(StorageNotAllowed, match="local paths are not allowed by this process .*"
                           "start it with --allow-local-path DIR"):
            f.fetch("m", str(tree / "models" / "hello.string"))


def test_a_symlink_leading_outside_is_refused(tree: Path) -> None:
    (tree / "models" / "passwd.string").symlink_to("/etc/passwd")
    (tree / "models" / "up").symlink_to(tree / "outside")
    for path in (str(tree / "models" / "passwd.string"), "passwd.string", "up/secret.string", "file://up"):
        with pytest.raises(StorageNotAllowed, match="leads outside the allowed folders through a symbolic link"):
            fetcher(tree).fetch("m", path)
        with pytest.raises(InvalidArgument, match="symbolic link"):
            StorageResolver(StorageConfig.empty(), policy(tree)).check(path)


def test_a_symlink_between_allowed_roots_is_fine(tree: Path) -> None:
    (tree / "models" / "x.string").symlink_to(tree / "extra" / "x.string")
    assert fetcher(tree).fetch("m", "x.string") == tree / "extra" / "x.string"  # the real path


def test_a_link_inside_a_model_folder_leading_outside_is_refused_at_fetch(tree: Path) -> None:
    (tree / "models" / "iris" / "weights.bin").symlink_to(tree / "outside" / "secret.string")
    with pytest.raises(StorageNotAllowed, match="'weights.bin' in it is a symbolic link leading outside"):
        fetcher(tree).fetch("m", "iris")


def test_a_link_swapped_after_registration_is_refused_at_fetch(tree: Path) -> None:
    link = tree / "models" / "swap.string"
    link.symlink_to(tree / "models" / "hello.string")
    resolver = StorageResolver(StorageConfig.empty(), policy(tree))
    resolver.check("swap.string")  # allowed at registration: the link points inside
    link.unlink()
    link.symlink_to(tree / "outside" / "secret.string")
    with pytest.raises(StorageNotAllowed, match="symbolic link"):
        fetcher(tree).fetch("m", "swap.string")


def test_a_root_that_is_itself_a_link_works(tree: Path) -> None:
    (tree / "alias").symlink_to(tree / "outside")
    f = ModelFetcher(StorageConfig.empty(), tree / "cache", policy=StoragePolicy.of(models_dir=tree / "alias"))
    assert f.fetch("m", str(tree / "alias" / "secret.string")).read_text() == "secret"


def test_missing_local_file_inside_a_root_is_refused_at_registration_and_fails_the_load(tree: Path) -> None:
    resolver = StorageResolver(StorageConfig.empty(), policy(tree))
    for path in ("later.string", "file://" + str(tree / "models" / "later.string")):
        with pytest.raises(InvalidArgument, match=r"model path '.*later.string' does not exist"):
            resolver.check(path)
    resolver.check("hello.string")  # there: accepted
    with pytest.raises(StorageNotFound, match="later.string .*does not exist"):
        fetcher(tree).fetch("m", "later.string")


def test_the_registration_check_refuses_a_type_the_runtime_does_not_serve(tree: Path) -> None:
    from kserve_mesh.server.runtime_setup import builtin_type_check
    from kserve_mesh.settings import MeshSettings

    check = model_check(None, policy(tree), check_type=builtin_type_check(MeshSettings()))
    check(ModelInfo("string", "hello.string"))
    check(ModelInfo("scikit-learn", "hello.string"))  # the runtime's aliases are its types too
    with pytest.raises(InvalidArgument, match="unsupported model type 'pmml'; the built-in runtime serves"):
        check(ModelInfo("pmml", "hello.string"))
    model_check(None, policy(tree))(ModelInfo("pmml", "hello.string"))  # types unknown (a remote runtime)
    assert builtin_type_check(MeshSettings(runtime="remote", runtime_address="h:1")) is None


def test_the_registration_check_reads_the_key_as_the_runtime_will(tree: Path) -> None:
    """ModelMesh-serving's shape (``rt:<runtime>``, the format in the key) is accepted, and a key
    the runtime would refuse at load (a malformed ``batching``) is refused at registration."""
    from kserve_mesh.server.runtime_setup import builtin_type_check
    from kserve_mesh.settings import MeshSettings

    check = model_check(None, policy(tree), check_type=builtin_type_check(MeshSettings()))
    check(ModelInfo("rt:kserve-mesh", "hello.string", '{"model_type": {"name": "string"}}'))
    check(ModelInfo("string", "hello.string", '{"batching": {"max_batch_size": 8}}'))
    with pytest.raises(InvalidArgument, match=r"model key 'batching'.max_batch_size must be an integer"):
        check(ModelInfo("string", "hello.string", '{"batching": {"max_batch_size": -2}}'))
    with pytest.raises(InvalidArgument, match="unknown field"):
        check(ModelInfo("string", "hello.string", '{"batching": {"size": 8}}'))
    with pytest.raises(InvalidArgument, match="unsupported model type 'pmml'"):
        check(ModelInfo("rt:kserve-mesh", "hello.string", '{"model_type": {"name": "pmml"}}'))


def test_local_fetcher_is_confined_too(tree: Path) -> None:
    f = LocalFetcher([tree / "models"])
    assert f.fetch("m", "file://" + str(tree / "models" / "hello.string")).read_text() == "hello"
    for path in ("/etc/passwd", "../outside/secret.string", str(tree / "extra" / "x.string"), "s3://b/k"):
        with pytest.raises(StorageNotAllowed):
            f.fetch("m", path)
    with pytest.raises(StorageNotAllowed, match="not allowed"):
        LocalFetcher([]).fetch("m", str(tree / "models" / "hello.string"))


# -- local archives -------------------------------------------------------------------------------

def _string_tar(path: Path, members: dict[str, bytes]) -> Path:
    with tarfile.open(path, "w:gz") as tf:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    return path


def test_local_archives_are_unpacked_into_the_cache_never_in_place(tree: Path) -> None:
    archive = _string_tar(tree / "models" / "packed.tar.gz", {"model/model.string": b"packed"})
    with zipfile.ZipFile(tree / "extra" / "z.zip", "w") as zf:
        zf.writestr("model.string", b"zipped")
    f = fetcher(tree)
    got = f.fetch("packed", str(archive))
    assert got.is_dir() and (got / "model" / "model.string").read_bytes() == b"packed"
    assert got.is_relative_to(tree / "cache")
    assert archive.exists() and sorted(p.name for p in (tree / "models").iterdir()) == [
        "hello.string", "iris", "packed.tar.gz"]
    zipped = f.fetch("z", f"file://{tree}/extra/z.zip")
    assert (zipped / "model.string").read_bytes() == b"zipped"
    f.release("packed")
    assert not got.exists() and archive.exists()


def test_a_local_exploit_archive_is_refused_and_leaves_nothing(tree: Path) -> None:
    archive = tree / "models" / "evil.tar"
    with tarfile.open(archive, "w") as tf:
        for name, target in (("e", "iris"), ("model.string", "e/../../outside/secret.string")):
            info = tarfile.TarInfo(name)
            info.type = tarfile.SYMTYPE
            info.linkname = target
            tf.addfile(info)
    with pytest.raises(UnsafeArchive):
        fetcher(tree).fetch("m", str(archive))
    assert list((tree / "cache").iterdir()) == []


# -- PVCs -----------------------------------------------------------------------------------------

PVC_CONFIG = StorageConfig.from_mapping({"claims": json.dumps({"type": "pvc", "name": "claim-a"})})


@pytest.fixture
def pvcs(tree: Path) -> Path:
    for claim in ("claim-a", "claim-b"):
        (tree / "pvc" / claim / "m").mkdir(parents=True)
        (tree / "pvc" / claim / "m" / "model.string").write_text(claim)
    return tree / "pvc"


def test_only_claims_named_by_the_storage_config_unless_allow_any_pvc(tree: Path, pvcs: Path) -> None:
    f = fetcher(tree, PVC_CONFIG)
    assert f.fetch("a", "pvc://claim-a/m").name == "m"
    for path, key in (("pvc://claim-b/m", ""), ("m", '{"storage_params": {"type": "pvc", "name": "claim-b"}}')):
        with pytest.raises(StorageNotAllowed, match=r"PVC 'claim-b' refused: .*\(named: claim-a\).*--allow-any-pvc"):
            f.fetch("b", path, key)
        with pytest.raises(InvalidArgument, match="PVC 'claim-b' refused"):
            model_check(None, policy(tree))(ModelInfo("string", path, key))
    any_pvc = fetcher(tree, PVC_CONFIG, allow_any_pvc=True)
    assert (any_pvc.fetch("b", "pvc://claim-b/m") / "model.string").read_text() == "claim-b"
    assert (any_pvc.fetch("b", "m", '{"storage_params": {"type": "pvc", "name": "claim-b"}}')
            / "model.string").read_text() == "claim-b"


def test_a_storage_key_of_type_pvc_names_its_claim(tree: Path, pvcs: Path) -> None:
    got = fetcher(tree, PVC_CONFIG).fetch("a", "/m/model.string", '{"storage_key": "claims"}')
    assert got.read_text() == "claim-a"


def test_pvc_paths_stay_inside_the_claim(tree: Path, pvcs: Path) -> None:
    (pvcs / "claim-a" / "m" / "other").symlink_to(pvcs / "claim-b" / "m")
    f = fetcher(tree, PVC_CONFIG)
    with pytest.raises(StorageNotAllowed, match="contains '..'"):
        f.fetch("a", "pvc://claim-a/../claim-b/m")
    with pytest.raises(StorageNotAllowed, match="leads outside the claim's folder"):
        f.fetch("a", "pvc://claim-a/m/other")
    with pytest.raises(StorageNotAllowed, match="invalid PVC claim name 'Bad_Name'"):
        f.fetch("a", "pvc://Bad_Name/m")


# -- http(s) hosts --------------------------------------------------------------------------------

def test_http_hosts_are_checked_against_the_allow_list(tree: Path) -> None:
    r = StorageResolver(StorageConfig.empty(), policy(tree, http_allowed_hosts=["models.example.com", ".corp.test"]))
    assert r.resolve("https://models.example.com/m.joblib").kind == "http"
    assert r.resolve("http://a.b.corp.test:8080/m.joblib").kind == "http"
    for url in ("https://evil.test/m", "https://corp.test/m", "https://models.example.com.evil.test/m",
                "https://models.example.com@evil.test/m"):
        with pytest.raises(StorageNotAllowed, match="not in the http allow-list.*--http-allowed-host"):
            r.resolve(url)
        with pytest.raises(InvalidArgument, match="allow-list"):
            r.check(url)
    web = StorageConfig.from_mapping({"web": json.dumps({"type": "http", "url": "https://evil.test/base"})})
    with pytest.raises(StorageNotAllowed, match="host 'evil.test'"):
        StorageResolver(web, policy(tree, http_allowed_hosts=["models.example.com"])).resolve("m", "web")


def test_no_allow_list_allows_any_host(tree: Path) -> None:
    assert StorageResolver(StorageConfig.empty(), policy(tree)).resolve("https://anywhere.test/m").kind == "http"


def test_bad_allow_list_entries_are_refused() -> None:
    with pytest.raises(InvalidArgument, match="not a host name"):
        StoragePolicy(http_allowed_hosts=("http://x/",))


# -- the registration check ------------------------------------------------------------------------

def test_registration_leaves_non_policy_problems_to_the_load(tree: Path) -> None:
    check = model_check(None, policy(tree))
    check(ModelInfo("string", "x", '{"storage_key": "unknown"}'))  # config may gain it before the load
    check(ModelInfo("string", "gs://b/m"))
    check(ModelInfo("sklearn", "s3://bucket/m.joblib"))
    with pytest.raises(InvalidArgument, match="modelKey is not valid JSON"):
        check(ModelInfo("string", "hello.string", "{nope"))


def test_policy_flags_round_trip_to_a_runtime_process(tree: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from kserve_mesh.runtime.server import _parser, storage_policy

    p = policy(tree, allow_any_pvc=True, http_allowed_hosts=["h.test"])
    assert storage_policy(_parser().parse_args(p.flags())) == p
    monkeypatch.chdir(tree)
    assert StoragePolicy.of(models_dir="models").local_roots == (tree / "models",)
