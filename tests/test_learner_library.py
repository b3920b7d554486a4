"""The learner library's two PlatformIO manifests: firmware/lib/library.json (lib_deps by path:
symlink://, file:// or a plain path to firmware/lib) and the repository's top library.json
(lib_deps by repository URL, which clones the whole repository) must build the same library."""

import json


def test_the_repository_manifest_builds_what_the_folder_manifest_builds(root):
    folder = json.loads((root / "firmware" / "lib" / "library.json").read_text())
    repo = json.loads((root / "library.json").read_text())
    prefix = "firmware/lib"
    assert repo["name"] == folder["name"] == "tinycil-learner"
    assert repo["version"] == folder["version"] and repo["headers"] == folder["headers"]
    assert repo["build"]["srcDir"] == prefix and folder["build"]["srcDir"] == "."
    assert repo["build"]["includeDir"] == f"{prefix}/{folder['build']['includeDir']}"
    assert repo["build"]["srcFilter"] == folder["build"]["srcFilter"]
    assert repo["build"]["flags"] == [f"-I{prefix}/{f[2:]}" for f in folder["build"]["flags"]]
    assert repo["build"]["libArchive"] is folder["build"]["libArchive"] is False

