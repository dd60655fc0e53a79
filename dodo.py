"""The task graph. Logic lives in pipeline/; this file only wires it together."""

from pipeline.cli import tasks

DOIT_CONFIG = {
    "default_tasks": ["snapshot"],
    "backend": "sqlite3",  # safe for two doit processes in one checkout
    "dep_file": ".doit.db",
    "verbosity": 2,
    "subtasks": True,  # `doit list` shows build:NAME for every declaration
    **tasks.farm_doit_config(),  # WHEELPROOF_FARM: nodes run on the farm, many at once (docs/farm.md)
}


def task_build():
    """Rebuild each declared wheel from its sdist in the sandbox and compare it with upstream."""
    for node in tasks.nodes("build"):
        yield {
            "name": node.name,
            "doc": node.doc,
            "actions": [(tasks.realise, [node.key])],
            "uptodate": [tasks.uptodate(node.key)],
        }


def task_test():
    """Run each declared test suite against the wheel we publish, in the sandbox."""
    yield {"name": None, "doc": "run every declared test suite"}
    for node in tasks.nodes("test"):
        yield {
            "name": node.name,
            "doc": node.doc,
            "actions": [(tasks.realise, [node.key])],
            "uptodate": [tasks.uptodate(node.key)],
            "task_dep": list(node.deps),
        }


def task_check():
    """The repository's consistency rules over every declaration and supported environment."""
    return {
        "actions": [tasks.check],
        "params": [{"name": "json", "long": "json", "type": bool, "default": False,
                    "help": "report as JSON"}],
        "uptodate": [False],
    }


def task_snapshot():
    """Build and check everything, then publish the snapshot."""
    return {
        "actions": [tasks.snapshot],
        "task_dep": list(tasks.graph()["snapshot"].deps),
        "params": [{"name": "require_attestations", "long": "require-attestations", "type": int, "default": 0,
                    "help": "publish only wheels K trusted builders attest (docs/challenge.md)"},
                   {"name": "trusted_keys", "long": "trusted-keys", "default": "",
                    "help": "the trusted builders' PEM public keys, one after another"}],
        "uptodate": [False],
    }


def task_serve():
    """Serve the store's snapshots over HTTP as an IPFS gateway (pip/uv install from it)."""
    return {
        "actions": [tasks.serve],
        "params": [{"name": "host", "long": "host", "default": "127.0.0.1", "help": "address to bind"},
                   {"name": "port", "long": "port", "type": int, "default": 8080, "help": "port"}],
        "uptodate": [False],
        "verbosity": 2,
    }


def task_publish():
    """Sign the latest snapshot as a release, chain it, log it, and update the feed."""
    return {
        "actions": [tasks.publish],
        "task_dep": ["snapshot"],
        "params": [{"name": "secret_key", "long": "secret-key", "default": "",
                    "help": "minisign secret key "
                            "(default $WHEELPROOF_SECRET_KEY or ~/.config/wheelproof/release.key)"}],
        "uptodate": [False],
    }


def task_car():
    """Make a snapshot's CAR (default: the latest, to <store>/cars/<root>.car); reused if made and checks."""
    return {
        "actions": [tasks.car],
        "params": [{"name": "root", "long": "root", "default": "", "help": "snapshot root CID (default: latest)"},
                   {"name": "output", "long": "output", "short": "o", "default": "",
                    "help": "where to write it (default <store>/cars/<root>.car)"}],
        "uptodate": [False],
        "verbosity": 2,
    }
