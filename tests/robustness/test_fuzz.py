"""Property-based fuzzing of every plugin (issue #16): hostile stdin, environment and CNI_ARGS,
run in-process through skel.dispatch inside a "host" netns the test owns.

Every answer must be valid CNI JSON: an error with an int `code` and a str `msg` and a non-zero
exit, or a success with a valid result (then DEL cleans up); a failed ADD leaves nothing behind
(links, addresses, routes, rules, qdiscs, netfilter rules, state files). The inputs are
tests/kit/fuzzkit.py's: the example classes of the issue as seeds, then random mutations.

The CI budget is bounded (FUZZ_EXAMPLES, default 200 random inputs; well under 60 s);
`make fuzz` runs a long campaign through the source modules and the frozen executables. The
random inputs come from a fresh seed each run (tests/kit/fuzzseed.py), printed in pytest's header
and in a failure; FUZZ_SEED=<seed> replays them.
"""

import os
import random

import pytest
from conftest import NetnsFactory
from hypothesis import given, seed, settings
from hypothesis import strategies as st
from kit import fuzzkit
from kit.fuzzseed import SEED, reproduce

EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "200"))
NAMES = [name for name in fuzzkit.plugins() if name != "cnitool"]


class World(fuzzkit.InProcessWorld):
    """The host and container netns, the data dir, an in-process runner, and the campaign."""

    def __init__(self, factory, data_dir: str, cni_path: str):
        super().__init__(factory, data_dir, cni_path, "fz")
        self.campaign = fuzzkit.Campaign(self.runner, self.container, data_dir, cni_path, "late")
        self._warm_up()

    def _warm_up(self) -> None:
        """One good ADD and DEL per plugin first: what a DEL keeps by design (the bridge,
        portmap's and masquerade's shared chains) is then part of every "before"."""
        for name in NAMES:
            conf = fuzzkit.full_config(name, self.data_dir, self.container)
            env = fuzzkit.base_env("ADD", self.container, self.cni_path, fuzzkit.ifname_for(name))
            stdin = fuzzkit.encode(conf)
            self.runner(name, env, stdin)
            self.runner(name, dict(env, CNI_COMMAND="DEL"), stdin)


@pytest.fixture(scope="module")
def world(tmp_path_factory, source_bin):
    factory = NetnsFactory()
    data_dir = str(tmp_path_factory.mktemp("fuzz"))
    cwd = os.getcwd()
    os.chdir(data_dir)  # a relative path in a mutated config lands in the test's directory
    made = None
    try:
        made = World(factory, data_dir, source_bin)
        yield made
    finally:
        if made is not None:
            made.close()
        os.chdir(cwd)
        factory.cleanup()


def check(world: World, name: str, command: str, stdin: bytes, env: dict) -> None:
    failures = len(world.campaign.failures)
    verdict = world.campaign.one(name, command, stdin, env)
    assert len(world.campaign.failures) == failures, (
        reproduce(),
        world.campaign.failures[failures:],
    )
    assert verdict.ok, (reproduce(), verdict)


@pytest.mark.parametrize("name", NAMES)
def test_seeded_example_classes_get_clean_answers(world, name):
    before = fuzzkit.snapshot(world.container, world.data_dir)
    for _what, command, stdin, env in fuzzkit.seeded_inputs(
        name, world.data_dir, world.container, world.cni_path
    ):
        check(world, name, command, stdin, env)
    # Failures past validation were checked one by one; this covers the early ones.
    assert fuzzkit.diff(before, fuzzkit.snapshot(world.container, world.data_dir)) == []


@pytest.mark.parametrize("name", fuzzkit.FILE_KEEPING)
def test_long_legal_ids_and_network_names_add_and_del(world, name):
    """The spec sets no length limit on container IDs and network names (#24): DEL succeeds
    (alone, and after ADD), ADD succeeds wherever the plain input does or refuses with code 7,
    and nothing is left behind."""
    plain = fuzzkit.full_config(name, world.data_dir, world.container)
    env = fuzzkit.base_env("ADD", world.container, world.cni_path, fuzzkit.ifname_for(name))
    baseline = world.runner(name, env, fuzzkit.encode(plain))
    world.runner(name, dict(env, CNI_COMMAND="DEL"), fuzzkit.encode(plain))
    before = fuzzkit.snapshot(world.container, world.data_dir)
    for what, env, stdin in fuzzkit.long_name_inputs(
        name, world.data_dir, world.container, world.cni_path
    ):
        alone = world.runner(name, dict(env, CNI_COMMAND="DEL"), stdin)
        assert alone.ok and alone.rc == 0, (what, "DEL alone", alone)
        added = world.runner(name, env, stdin)
        assert added.ok, (what, added)
        if baseline.rc == 0 and added.rc != 0:
            assert added.json["code"] == 7, (what, added)
        deleted = world.runner(name, dict(env, CNI_COMMAND="DEL"), stdin)
        assert deleted.ok and deleted.rc == 0, (what, "DEL", deleted)
        assert fuzzkit.diff(before, fuzzkit.snapshot(world.container, world.data_dir)) == [], what


def test_gc_with_malformed_attachments_deletes_nothing_in_any_plugin(world):
    """Refused with code 7 by every plugin that deletes by the list; the others (which only
    forward GC to their IPAM, or keep nothing per attachment) succeed and delete nothing."""
    for name in NAMES:
        if world.runner.modules[name].verbs["GC"] is None:
            continue
        before = fuzzkit.snapshot(world.container, world.data_dir)
        for what, command, stdin, env in fuzzkit.seeded_inputs(
            name, world.data_dir, world.container, world.cni_path
        ):
            if command != "GC":
                continue
            verdict = world.runner(name, env, stdin)
            assert verdict.ok, (name, what, verdict)
            if verdict.rc:
                assert verdict.json["code"] == 7, (name, what, verdict)
        assert fuzzkit.diff(before, fuzzkit.snapshot(world.container, world.data_dir)) == [], name


@seed(SEED)
@settings(
    max_examples=EXAMPLES,
    deadline=None,  # a plugin call takes what the kernel takes; speed is never asserted
    database=None,  # the seed, not a local example database, says what ran
    # No health check is suppressed: they time the generation of inputs (a plugin name and a
    # Random), not the plugin calls, and none fires.
)
@given(name=st.sampled_from(NAMES), rng=st.randoms(use_true_random=False))
def test_random_hostile_inputs_get_clean_answers(world, name, rng: random.Random):
    command, stdin, env = world.campaign.random_input(rng, name)
    check(world, name, command, stdin, env)
