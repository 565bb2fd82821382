"""The pure half of replay: range resolution, selection and re-targeting, local guard, report, diff."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from streams.core.model import JobMessage
from streams.replay.plan import (
    LocalGuard,
    PartitionRange,
    ReplayReport,
    ReplayUsageError,
    diff_jobs,
    job_differences,
    parse_offsets,
    parse_time,
    progress_line,
    resolve_range,
    route_prefix,
    select,
)
from streams.shared.settings import load_settings

LOW = {0: 10, 1: 0}
HIGH = {0: 100, 1: 50}


def test_times_are_iso_and_utc_unless_told():
    assert parse_time("2024-05-01") == datetime(2024, 5, 1, tzinfo=UTC)
    assert parse_time("2024-05-01T10:00:00Z") == datetime(2024, 5, 1, 10, tzinfo=UTC)
    assert parse_time("2024-05-01T12:00+02:00") == datetime(2024, 5, 1, 10, tzinfo=UTC)
    with pytest.raises(ReplayUsageError, match="ISO 8601"):
        parse_time("yesterday")


def test_offsets_for_every_partition_or_some():
    assert parse_offsets("7", 3) == {0: 7, 1: 7, 2: 7}
    assert parse_offsets("0:5, 2:9", 3) == {0: 5, 2: 9}
    with pytest.raises(ReplayUsageError, match="partition 3 does not exist"):
        parse_offsets("3:1", 3)
    with pytest.raises(ReplayUsageError, match="expected OFFSET"):
        parse_offsets("0=5", 3)


def test_time_range_starts_and_ends_where_kafka_says():
    ranges = resolve_range(LOW, HIGH, since={0: 40, 1: None}, until={0: 60, 1: None})
    assert ranges == [PartitionRange(0, 40, 60)]  # partition 1 has nothing at or after --since


def test_no_until_reads_to_the_end_and_offsets_are_clamped_to_what_is_kept():
    assert resolve_range(LOW, HIGH, since={0: 0, 1: 20}) == [PartitionRange(0, 10, 100), PartitionRange(1, 20, 50)]
    assert resolve_range(LOW, HIGH, from_offsets={0: 0, 1: 5}, to_offsets={1: 500}) == [
        PartitionRange(0, 10, 100), PartitionRange(1, 5, 50)]


def test_from_offsets_naming_some_partitions_reads_only_those():
    assert resolve_range(LOW, HIGH, from_offsets={1: 45}) == [PartitionRange(1, 45, 50)]
    assert resolve_range(LOW, HIGH, from_offsets={1: 45}, to_offsets={1: 45}) == []


def settings(**env):
    return load_settings(env={"TC_TREEHERDER_ROUTE_PREFIXES": "tc-treeherder,tc-treeherder-staging,third", **env})


def test_default_selection_is_every_enabled_destination():
    chosen = select(settings(TC_TREEHERDER_DESTINATION_THIRD_ENABLED="false"))
    assert chosen.prefixes == {"tc-treeherder", "tc-treeherder-staging"}
    assert chosen.target is None


def test_destinations_by_name_or_prefix_and_projects():
    chosen = select(settings(TC_TREEHERDER_DESTINATION_TC_TREEHERDER_NAME="production"), ["production", "third"],
                    projects=["autoland"])
    assert chosen.prefixes == {"tc-treeherder", "third"}
    assert chosen.wants_project("autoland") and not chosen.wants_project("try")
    with pytest.raises(ReplayUsageError, match="unknown destination 'nope'; configured: production"):
        select(settings(TC_TREEHERDER_DESTINATION_TC_TREEHERDER_NAME="production"), ["nope"])


def test_retargeting_sends_the_selected_prefix_to_the_target_in_its_profile():
    config = settings(TC_TREEHERDER_DESTINATION_TC_TREEHERDER_STAGING_PROFILE="legacy")
    chosen = select(config, ["tc-treeherder"], to="tc-treeherder-staging")
    rules = chosen.replay_rules
    assert rules.destination("tc-treeherder") == "tc-treeherder-staging"
    assert rules.profile("tc-treeherder") == "legacy"
    assert not any(d.enabled for d in rules.targets("third"))  # not selected: no job in the replay
    assert chosen.original_destination("tc-treeherder") == "tc-treeherder"  # what the diff matches


def test_a_disabled_destination_is_replayed_only_elsewhere():
    config = settings(TC_TREEHERDER_DESTINATION_TC_TREEHERDER_ENABLED="false")
    with pytest.raises(ReplayUsageError, match="disabled"):
        select(config, ["tc-treeherder"])
    chosen = select(config, ["tc-treeherder"], to="tc-treeherder-staging")
    assert [(d.name, d.enabled) for d in chosen.replay_rules.targets("tc-treeherder")] == [
        ("tc-treeherder-staging", True)]
    with pytest.raises(ReplayUsageError, match="--to tc-treeherder: the destination is disabled"):
        select(config, ["third"], to="tc-treeherder")


THREE = {"TC_TREEHERDER_DESTINATIONS": "production,stage,dev",
         "TC_TREEHERDER_DESTINATION_PRODUCTION_ROUTE_PREFIXES": "tc-treeherder",
         "TC_TREEHERDER_DESTINATION_STAGE_ROUTE_PREFIXES": "tc-treeherder,tc-treeherder-staging",
         "TC_TREEHERDER_DESTINATION_DEV_ROUTE_PREFIXES": "tc-treeherder",
         "TC_TREEHERDER_DESTINATION_DEV_PROJECTS": "autoland,try"}


def test_a_shared_prefix_replays_only_the_chosen_destinations():
    chosen = select(settings(**THREE), ["dev"])
    assert chosen.prefixes == {"tc-treeherder"} and chosen.destinations == {"dev"}
    assert [d.name for d in chosen.replay_rules.targets("tc-treeherder")] == ["dev"]
    assert chosen.replay_rules.targets("tc-treeherder")[0].projects == {"autoland", "try"}  # dev's own filter
    assert chosen.original_destination("tc-treeherder") == "dev"
    every = select(settings(**THREE))
    assert [d.name for d in every.replay_rules.targets("tc-treeherder")] == ["production", "stage", "dev"]


def test_retargeting_honours_the_targets_filters_unless_told_otherwise():
    chosen = select(settings(**THREE), ["production"], to="dev")
    (target,) = chosen.replay_rules.targets("tc-treeherder")
    assert (target.name, target.projects) == ("dev", {"autoland", "try"})
    everything = select(settings(**THREE), ["production"], to="dev", ignore_filters=True)
    (target,) = everything.replay_rules.targets("tc-treeherder")
    assert (target.name, target.projects) == ("dev", None)
    with pytest.raises(ReplayUsageError, match="--ignore-filters goes with --to"):
        select(settings(**THREE), ["production"], ignore_filters=True)


def test_route_prefix_of_a_task():
    rules = select(settings()).rules
    assert route_prefix({"routes": ["index.x", "third.v2.try.abc"]}, rules) == "third"
    assert route_prefix({"routes": ["index.x"]}, rules) is None
    assert route_prefix({"routes": "tc-treeherder.v2.try.abc"}, rules) is None


def job(state, task="abc/0"):
    return {"taskId": task, "state": state}


def test_local_guard_holds_back_a_run_going_backwards_within_the_replay():
    guard = LocalGuard()
    admitted = [guard.admit(JobMessage("d", "p", "d.p._", job(s))) for s in ("pending", "completed", "running")]
    assert admitted == [True, True, False]
    assert guard.admit(JobMessage("other", "p", "other.p._", job("running")))  # per destination
    assert guard.suppressed == 1


def test_report_names_jobs_per_destination_and_rejections_by_reason():
    report = ReplayReport(source_topic="ns.tc-treeherder.rejected", events=200, seconds=2.0)
    report.jobs.update({"tc-treeherder-staging": 150, "tc-treeherder": 20})
    report.rejected.update({"extra.treeherder.tier": 3})
    text = "\n".join(report.lines())
    assert "events read: 200 in 2.0s (100 events/s)" in text
    assert "jobs emitted: 170" in text and "tc-treeherder-staging: 150" in text
    assert "rejected: 3" in text and "extra.treeherder.tier" in text
    report.dry_run = True
    assert "would emit" in "\n".join(report.lines())


def test_progress_line_has_rate_and_eta():
    assert progress_line(250, 1000, 5.0, width=10) == "[##........]  25%  250/1,000 events  50/s  ETA 0:15"
    assert progress_line(1000, 1000, 5.0, width=4).endswith("ETA 0:00")
    assert progress_line(0, 10, 0.0).endswith("ETA -:--")


def test_job_differences_by_field_path():
    old = {"display": {"jobName": "a"}, "logs": [{"name": "live_backing_log"}], "tier": 1}
    new = {"display": {"jobName": "b"}, "logs": [{"name": "builds-4h"}], "tier": 1, "productName": "x"}
    assert job_differences(old, new) == ["display.jobName: 'a' -> 'b'", "logs[0].name: 'live_backing_log' -> "
                                         "'builds-4h'", "productName: (absent) -> 'x'"]
    assert job_differences(old, old) == []


def test_diff_matches_old_jobs_by_event_position_and_destination():
    old = {(0, 1, "d"): job("pending"), (0, 2, "d"): job("running"), (0, 3, "d"): job("completed")}
    new = {(0, 1, "d"): job("pending"), (0, 2, "d"): job("completed"), (1, 9, "d"): job("pending")}
    diff = diff_jobs(old, new)
    assert diff.unchanged == 1
    assert diff.changed == [((0, 2, "d"), ["state: 'running' -> 'completed'"])]
    assert diff.new_only == [(1, 9, "d")] and diff.old_only == [(0, 3, "d")]
    assert diff.lines()[0].startswith("diff against the jobs emitted at the time: 1 unchanged, 1 changed, 1 new")
