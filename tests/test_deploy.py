"""The CloudFormation template: cfn-lint clean (informational checks on), and consistent with
the code it deploys.

Either the template or ``rapid provision`` may own the SNS/SQS resources, so the names and
attributes must be the same; the metrics the template scales and alarms on must be the ones
the scheduler publishes (``queues/backlog.py``, ``queues/capacity.py``); its sizing figures
are ``config/sizing.py``'s; the systemd units must run the Procfile's processes. The boot
itself is executed in ``tests/test_boot.py``. Nothing here calls real AWS: the AWS checks run
against the moto server.
"""

from __future__ import annotations

import ast
import importlib.util
import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from importlib.machinery import SourceFileLoader
from pathlib import Path
from typing import Any

import pytest
from cfnlint.decode.cfn_yaml import load as load_cfn_yaml
from sqlalchemy.engine import make_url

from config import sizing
from config.names import Names
from config.settings import load_settings
from queues import provision
from queues.backlog import NAMESPACE, BacklogPublisher, Outcomes
from queues.capacity import REQUIRED_INSTANCES, capacity_metric_data
from queues.provision import Provisioner, ProvisionReport
from tests.fleet import moto_client

ROOT = Path(__file__).resolve().parent.parent
TEMPLATE = ROOT / "deploy" / "cloudformation" / "rapid-response.yaml"
BOOT = ROOT / "deploy" / "boot"

#: What moto reports as the account and region.
ACCOUNT, REGION = "123456789012", "us-east-1"


@pytest.fixture(scope="module")
def template() -> dict[str, Any]:
    """The template as cfn-lint reads it (short-form tags become ``Ref``/``Fn::…``)."""
    return dict(load_cfn_yaml(str(TEMPLATE)))


# --- a small renderer for the intrinsic functions the checks need ------------------------------


def sub(text: str, env: dict[str, str]) -> str:
    """``Fn::Sub``: ``${Name}`` and ``${Resource.Attr}`` from ``env`` (others left as ``<…>``)."""

    def one(match: re.Match[str]) -> str:
        name = match.group(1)
        if name.startswith("!"):
            return "${" + name[1:] + "}"
        return env.get(name, f"<{name}>")

    return re.sub(r"\$\{([^}]+)\}", one, text)


def render(value: Any, env: dict[str, str]) -> Any:
    """Resolve ``Ref``, ``Fn::Sub`` and ``Fn::GetAtt`` against ``env``, recursively."""
    if isinstance(value, dict):
        if set(value) == {"Ref"}:
            return env.get(value["Ref"], f"<{value['Ref']}>")
        if set(value) == {"Fn::Sub"}:
            arg = value["Fn::Sub"]
            if isinstance(arg, list):
                text, extra = arg
                return sub(text, {**env, **{k: render(v, env) for k, v in extra.items()}})
            return sub(arg, env)
        if set(value) == {"Fn::GetAtt"}:
            target = value["Fn::GetAtt"]
            name = ".".join(target) if isinstance(target, list) else target
            return env.get(name, f"<{name}>")
        return {k: render(v, env) for k, v in value.items()}
    if isinstance(value, list):
        return [render(v, env) for v in value]
    return value


def arn_env(prefix: str) -> dict[str, str]:
    """What the template's pseudo parameters and queue attributes are on the moto server."""
    return {
        "Prefix": prefix,
        "AWS::Partition": "aws",
        "AWS::Region": REGION,
        "AWS::AccountId": ACCOUNT,
        "IntakeQueue.Arn": f"arn:aws:sqs:{REGION}:{ACCOUNT}:{prefix}-intake",
        "IntakeDeadLetterQueue.Arn": f"arn:aws:sqs:{REGION}:{ACCOUNT}:{prefix}-intake-dlq",
        "IntakeDeadLetterQueue.QueueName": f"{prefix}-intake-dlq",
    }


def resources(template: dict[str, Any]) -> dict[str, Any]:
    """Resources, with ``Fn::ForEach`` loops left out (see :func:`for_each`)."""
    return {k: v for k, v in template["Resources"].items() if not k.startswith("Fn::ForEach::")}


def for_each(template: dict[str, Any], loop: str) -> tuple[str, Any, dict[str, Any]]:
    """``(identifier, collection, body)`` of one ``Fn::ForEach`` loop of Resources."""
    identifier, collection, body = template["Resources"][f"Fn::ForEach::{loop}"]
    return identifier, collection, body


def parameter_default(template: dict[str, Any], name: str) -> str:
    return str(template["Parameters"][name]["Default"])


# --- cfn-lint -----------------------------------------------------------------------------------


def test_cfn_lint_is_clean() -> None:
    # The console script's own entry point, so the result is what `cfn-lint FILE` prints.
    result = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys; from cfnlint.runner import main; sys.exit(main())",
            "--include-checks",
            "I",
            "--",
            str(TEMPLATE),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, f"cfn-lint found problems:\n{result.stdout}{result.stderr}"


# --- the same resources as `rapid provision` -----------------------------------------------------


@pytest.mark.parametrize("prefix", ["rapid", "t0a1b2c3d"])
def test_queue_names_and_attributes_match_provision(template: dict[str, Any], prefix: str) -> None:
    names, env = Names(prefix), arn_env(prefix)
    res = resources(template)
    intake = render(res["IntakeQueue"]["Properties"], env)
    dlq = render(res["IntakeDeadLetterQueue"]["Properties"], env)
    # The names come from config/names.py's rules
    assert res["IntakeQueue"]["Properties"]["QueueName"] == {"Fn::Sub": "${Prefix}-intake"}
    assert intake["QueueName"] == names.intake_queue
    assert dlq["QueueName"] == names.intake_dlq
    # And the attributes are provision's constants
    assert intake["VisibilityTimeout"] == provision.INTAKE_VISIBILITY_TIMEOUT_S
    assert intake["ReceiveMessageWaitTimeSeconds"] == provision.RECEIVE_WAIT_TIME_S
    assert intake["MessageRetentionPeriod"] == provision.INTAKE_RETENTION_S
    assert dlq["MessageRetentionPeriod"] == provision.DLQ_RETENTION_S
    assert intake["RedrivePolicy"] == {
        "deadLetterTargetArn": env["IntakeDeadLetterQueue.Arn"],
        "maxReceiveCount": provision.INTAKE_MAX_RECEIVE_COUNT,
    }
    # Nothing provision lacks (SSE-SQS is every new queue's default, spelled out)
    assert set(dlq) == {"QueueName", "MessageRetentionPeriod", "SqsManagedSseEnabled"}
    assert dlq["SqsManagedSseEnabled"] is True and intake["SqsManagedSseEnabled"] is True


def test_alert_topics_are_named_and_subscribed_like_provision(template: dict[str, Any]) -> None:
    identifier, collection, body = for_each(template, "AlertTopics")
    # One topic per entry of the AlertTopics parameter, debate-night by default
    assert collection == {"Ref": "AlertTopics"}
    assert parameter_default(template, "AlertTopics") == "debate-night"
    (topic,) = body.values()
    assert topic["Type"] == "AWS::SNS::Topic"
    for name in ("debate-night", "town-hall"):
        props = render(topic["Properties"], {**arn_env("rapid"), identifier: name})
        assert props["TopicName"] == Names("rapid").alert_topic(name)
        # Subscribed to the intake queue with the SNS envelope (raw delivery off), as provision
        assert props["Subscription"] == [
            {"Protocol": "sqs", "Endpoint": arn_env("rapid")["IntakeQueue.Arn"]}
        ]


def test_queue_policy_admits_only_the_alert_topics(template: dict[str, Any]) -> None:
    env = arn_env("rapid")
    policy = render(resources(template)["IntakeQueuePolicy"]["Properties"], env)
    (statement,) = policy["PolicyDocument"]["Statement"]
    assert statement["Action"] == "sqs:SendMessage"
    assert statement["Condition"] == {
        "ArnLike": {"aws:SourceArn": f"arn:aws:sns:{REGION}:{ACCOUNT}:rapid-alert-*"}
    }


@pytest.fixture
def aws(moto_url: str) -> Iterator[dict[str, Any]]:
    """boto3 clients on the moto server (dummy credentials)."""
    clients = {name: moto_client(name, moto_url) for name in ("sns", "sqs", "cloudwatch")}
    yield clients
    for client in clients.values():
        client.close()


def attr(value: Any) -> str:
    """A template property as an SQS attribute string (booleans as SQS spells them)."""
    return str(value).lower() if isinstance(value, bool) else str(value)


@pytest.mark.integration
def test_provision_finds_nothing_to_change_in_what_the_template_creates(
    template: dict[str, Any], aws: dict[str, Any], prefix: str
) -> None:
    # Given the queues, queue policy, topic and subscription created as the template does
    env, res = arn_env(prefix), resources(template)
    sqs, sns = aws["sqs"], aws["sns"]
    dlq = render(res["IntakeDeadLetterQueue"]["Properties"], env)
    sqs.create_queue(
        QueueName=dlq.pop("QueueName"), Attributes={k: attr(v) for k, v in dlq.items()}
    )
    intake = render(res["IntakeQueue"]["Properties"], env)
    policy = render(res["IntakeQueuePolicy"]["Properties"]["PolicyDocument"], env)
    attributes = {k: attr(v) for k, v in intake.items() if k not in ("QueueName", "RedrivePolicy")}
    attributes["RedrivePolicy"] = json.dumps(intake["RedrivePolicy"])
    attributes["Policy"] = json.dumps(policy)
    sqs.create_queue(QueueName=intake["QueueName"], Attributes=attributes)
    identifier, _, body = for_each(template, "AlertTopics")
    topic = render(next(iter(body.values()))["Properties"], {**env, identifier: "debate-night"})
    arn = sns.create_topic(Name=topic["TopicName"])["TopicArn"]
    for s in topic["Subscription"]:
        sns.subscribe(TopicArn=arn, Protocol=s["Protocol"], Endpoint=s["Endpoint"])

    # When `rapid provision` runs on top of them
    report = ProvisionReport()
    provisioner = Provisioner(Names(prefix), sns, sqs)
    intake_arn, _ = provisioner.ensure_queues(report)
    provisioner.ensure_topic("debate-night", intake_arn, report)

    # Then it converges at once: nothing to create, no attribute to change
    assert report.created == [] and report.updated == []


# --- metrics: what the template reads is what the fleet publishes ---------------------------------


def template_metrics(node: Any) -> Iterator[dict[str, Any]]:
    """Every ``Metric`` of our namespace the template reads (scaling policy, alarms)."""
    if isinstance(node, dict):
        if node.get("Namespace") == NAMESPACE and "MetricName" in node:
            yield node
        for value in node.values():
            yield from template_metrics(value)
    elif isinstance(node, list):
        for value in node:
            yield from template_metrics(value)


def published(prefix: str) -> set[tuple[str, tuple[tuple[str, str], ...]]]:
    """(name, dimensions) of every datum the scheduler's leader sends."""
    backlog = {(c, p): 1 for c in ("sms", "email") for p in ("urgent", "normal", "bulk")}
    data = BacklogPublisher(None, NAMESPACE, prefix).metric_data(
        backlog, Outcomes({"sms": 1, "email": 1}, {"sms": 0, "email": 0}, 0)
    )
    data += capacity_metric_data({"sms": 0.5, "email": 0.25}, prefix)
    return {
        (d["MetricName"], tuple(sorted((x["Name"], x["Value"]) for x in d["Dimensions"])))
        for d in data
    }


def alarm_metrics(alarm: dict[str, Any]) -> list[dict[str, Any]]:
    """The metrics an alarm reads: its single metric, or its metric-math inputs."""
    if "MetricName" in alarm:
        return [{k: alarm[k] for k in ("Namespace", "MetricName", "Dimensions") if k in alarm}]
    return [q["MetricStat"]["Metric"] for q in alarm.get("Metrics", []) if "MetricStat" in q]


def test_every_metric_the_template_reads_is_published_with_the_same_dimensions(
    template: dict[str, Any],
) -> None:
    # Given every metric of our namespace in the template, loops expanded
    found = []
    for key, node in template["Resources"].items():
        if key.startswith("Fn::ForEach::"):
            identifier, collection, body = node
            for item in collection if isinstance(collection, list) else []:
                found += [
                    render(m, {"Prefix": "p1", identifier: item}) for m in template_metrics(body)
                ]
        else:
            found += [render(m, {"Prefix": "p1"}) for m in template_metrics(node)]
    assert len(found) >= 10  # the scaling metric, the scheduler, the stall and outcome alarms
    # Then each is exactly one the publisher sends (CloudWatch matches dimension sets exactly)
    sent = published("p1")
    for metric in found:
        dims = tuple(sorted((d["Name"], d["Value"]) for d in metric.get("Dimensions", [])))
        assert (metric["MetricName"], dims) in sent, metric


def test_metric_permissions_are_scoped_to_the_namespace(template: dict[str, Any]) -> None:
    for role in ("WorkerRole", "WebRole"):
        statements = resources(template)[role]["Properties"]["Policies"][0]["PolicyDocument"]
        (metrics,) = [
            s for s in statements["Statement"] if s["Action"] == "cloudwatch:PutMetricData"
        ]
        assert metrics["Condition"] == {"StringEquals": {"cloudwatch:namespace": NAMESPACE}}


@pytest.mark.integration
def test_the_scaling_policy_tracks_published_required_instances_per_instance(
    template: dict[str, Any], aws: dict[str, Any], prefix: str
) -> None:
    # Given 1.5 required instances published by the scheduler, and 3 in-service instances
    cloudwatch = aws["cloudwatch"]
    cloudwatch.put_metric_data(
        Namespace=NAMESPACE, MetricData=capacity_metric_data({"sms": 0.45, "email": 1.05}, prefix)
    )
    cloudwatch.put_metric_data(
        Namespace="AWS/AutoScaling",
        MetricData=[
            {
                "MetricName": "GroupInServiceInstances",
                "Dimensions": [{"Name": "AutoScalingGroupName", "Value": f"{prefix}-workers"}],
                "Value": 3.0,
            }
        ],
    )
    # When the policy's own metric queries run (moto does not evaluate metric math, so the
    # inputs are fetched and the expression is applied here)
    spec = resources(template)["WorkerCapacityScaling"]["Properties"]
    tracking = spec["TargetTrackingConfiguration"]
    queries = render(tracking["CustomizedMetricSpecification"]["Metrics"], {"Prefix": prefix})
    stats = [
        {"Id": q["Id"], "MetricStat": {**q["MetricStat"], "Period": 60}, "ReturnData": True}
        for q in queries
        if "MetricStat" in q
    ]
    (expression,) = [q for q in queries if "Expression" in q]
    assert expression["Expression"] == "required / instances" and expression["ReturnData"]
    now = datetime.now(UTC)
    response = cloudwatch.get_metric_data(
        MetricDataQueries=stats,
        StartTime=now - timedelta(minutes=10),
        EndTime=now + timedelta(minutes=1),
    )
    values = {r["Id"]: r["Values"] for r in response["MetricDataResults"]}
    # Then the policy sees 1.5 / 3 = 0.5 of its target of 1: it scales in to 2 instances
    assert values["instances"] == [3.0]
    assert values["required"][0] == pytest.approx(1.5)
    assert float(tracking["TargetValue"]) == sizing.TARGET_UTILIZATION
    assert spec["EstimatedInstanceWarmup"] == sizing.INSTANCE_WARMUP_S


def test_the_template_and_the_docs_carry_config_sizing_figures(template: dict[str, Any]) -> None:
    # One source of truth: the generator finds nothing to change in the template or the docs
    result = subprocess.run(
        [sys.executable, str(ROOT / "deploy" / "sizing.py"), "--check"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    # And the defaults are what config/sizing.py computes
    sms = float(parameter_default(template, "SmsRateAccount"))
    email = float(parameter_default(template, "EmailRate"))
    assert (sms, email) == (sizing.DEFAULT_SMS_RATE_ACCOUNT, sizing.DEFAULT_EMAIL_RATE)
    assert int(parameter_default(template, "WorkerMaxSize")) == sizing.worker_max_size(sms, email)
    description = template["Parameters"]["WorkerMaxSize"]["Description"]
    assert f"SmsRateAccount / {sizing.SMS_PER_INSTANCE_PER_S:.0f}" in description
    assert f"EmailRate / {sizing.EMAIL_PER_INSTANCE_PER_S:.0f}" in description
    assert "TargetBacklogPerInstance" not in template["Parameters"]


def test_the_sizing_check_sees_a_stale_figure(tmp_path: Path) -> None:
    loader = SourceFileLoader("deploy_sizing", str(ROOT / "deploy" / "sizing.py"))
    spec = importlib.util.spec_from_loader("deploy_sizing", loader)
    assert spec is not None
    module = importlib.util.module_from_spec(spec)
    loader.exec_module(module)
    stale = TEMPLATE.read_text().replace(
        "Default: 2 # sizing: worker_max_size", "Default: 9 # sizing: worker_max_size"
    )
    assert module.render_template(stale) == TEMPLATE.read_text()


# --- instances: the Procfile's processes as systemd units ---------------------------------------


def user_data(template: dict[str, Any], launch_template: str) -> str:
    """The whole user data script of one launch template, with placeholders for references."""
    data = resources(template)[launch_template]["Properties"]["LaunchTemplateData"]
    separator, (header, body) = data["UserData"]["Fn::Base64"]["Fn::Join"]
    env = {"Prefix": "rapid", "AWS::Region": REGION, "AWS::StackName": "rapid-stack"}
    mapping = body["Fn::FindInMap"]
    text = template["Mappings"][mapping[0]][mapping[1]][mapping[2]]
    return str(separator).join([sub(header["Fn::Sub"], env), text])


def bootstrap_conf(script: str) -> dict[str, str]:
    """The ``bootstrap.conf`` the user data's header writes."""
    start = script.index("cat > /etc/rapid/bootstrap.conf <<'EOF'\n")
    lines = script[start:].split("\n")[1:]
    conf = {}
    for line in lines[: lines.index("EOF")]:
        key, _, value = line.partition("=")
        conf[key] = value.strip('"')
    return conf


def procfile() -> dict[str, str]:
    lines = (ROOT / "Procfile").read_text().splitlines()
    return dict(line.split(": ", 1) for line in lines if line.strip())


SCRIPTS = ["boot.sh", "rapid-health", "rapid-drain", "rapid-shell"]


@pytest.mark.parametrize("launch_template", ["WorkerLaunchTemplate", "WebLaunchTemplate"])
def test_user_data_is_valid_bash(template: dict[str, Any], launch_template: str) -> None:
    script = user_data(template, launch_template)
    assert script.startswith("#!/bin/bash\n")
    checked = subprocess.run(
        ["bash", "-n"], input=script, capture_output=True, text=True, check=False
    )
    assert checked.returncode == 0, checked.stderr
    # The release comes from the bundle in S3 and its boot.sh decides the signal
    assert (
        'aws s3 cp --region "$REGION" --only-show-errors "s3://$ARTIFACT_BUCKET/$RELEASE_KEY"'
        in script
    )
    assert script.index("bash /opt/rapid/release/boot/boot.sh") < script.index("signal 0")
    assert "pip install" not in script


@pytest.mark.parametrize("name", SCRIPTS)
def test_boot_scripts_are_valid_bash(name: str) -> None:
    checked = subprocess.run(
        ["bash", "-n", str(BOOT / name)], capture_output=True, text=True, check=False
    )
    assert checked.returncode == 0, checked.stderr


def test_instances_install_only_from_the_bundle() -> None:
    boot = (BOOT / "boot.sh").read_text()
    pips = [line for line in boot.splitlines() if "bin/pip install" in line]
    assert len(pips) == 2 and all("--no-index" in line for line in pips)
    assert "--require-hashes" in boot and "requirements.lock" in boot
    # The production lock has no demo or test tools in it
    lock = (ROOT / "requirements.lock").read_text().lower()
    for tool in ("moto", "fakeredis", "pytest", "cfn-lint", "checkov", "playwright"):
        assert f"\n{tool}==" not in lock, tool


def test_every_procfile_process_runs_as_a_systemd_unit_that_drains(
    template: dict[str, Any],
) -> None:
    worker, web = (user_data(template, lt) for lt in ("WorkerLaunchTemplate", "WebLaunchTemplate"))
    unit = (BOOT / "units" / "rapid@.service").read_text()
    # Each unit runs `rapid <process>` with the fleet's environment, as the Procfile line does
    assert "ExecStart=/usr/local/bin/rapid-env exec /opt/rapid/venv/bin/rapid %i $ARGS" in unit
    assert all(command == f"rapid {name}" for name, command in procfile().items())
    # No environment file that the start itself would have to write (the first-boot bug)
    assert "EnvironmentFile=/etc/rapid/env" not in unit
    assert [line for line in unit.splitlines() if line.startswith("EnvironmentFile=")] == [
        "EnvironmentFile=-/etc/rapid/%i.args"
    ]
    # SIGTERM to the main process only; 35 s, since every process drains within 30 s
    assert "KillMode=mixed" in unit and "KillSignal=SIGTERM" in unit
    assert "TimeoutStopSec=35" in unit
    # Every Procfile process is enabled on exactly one kind of instance
    units = {
        role: bootstrap_conf(s)["UNITS"].split() for role, s in (("worker", worker), ("web", web))
    }
    enabled = [u for us in units.values() for u in us if u.startswith("rapid@")]
    assert sorted(enabled) == sorted(f"rapid@{name}.service" for name in procfile())
    assert units["worker"] == [
        "rapid@intake.service",
        "rapid@sender.service",
        "rapid-drain.service",
    ]
    # And the drain watcher stops the workers before completing the lifecycle action
    drain = (BOOT / "rapid-drain").read_text()
    assert drain.index("rapid@intake.service rapid@sender.service") < drain.index(
        "complete-lifecycle-action"
    )


def test_worker_group_drains_and_scales_on_required_capacity(template: dict[str, Any]) -> None:
    res = resources(template)
    group = res["WorkerGroup"]["Properties"]
    (hook,) = group["LifecycleHookSpecificationList"]
    assert hook["LifecycleTransition"] == "autoscaling:EC2_INSTANCE_TERMINATING"
    assert render(hook["LifecycleHookName"], {"Prefix": "rapid"}) == "rapid-drain"
    assert render(group["AutoScalingGroupName"], {"Prefix": "rapid"}) == "rapid-workers"
    assert group["MaxSize"] == {"Ref": "WorkerMaxSize"}
    # Migrations (web boot) come before any worker starts
    assert res["WorkerGroup"]["DependsOn"] == "WebGroup"
    policy = res["WorkerCapacityScaling"]["Properties"]
    assert policy["PolicyType"] == "TargetTrackingScaling"
    metrics = policy["TargetTrackingConfiguration"]["CustomizedMetricSpecification"]["Metrics"]
    assert {m["MetricStat"]["Metric"]["MetricName"] for m in metrics if "MetricStat" in m} == {
        REQUIRED_INSTANCES,
        "GroupInServiceInstances",
    }
    # Health: web on the balancer's /healthz, workers report their sender's heartbeat
    assert res["WebGroup"]["Properties"]["HealthCheckType"] == "ELB"
    worker_statements = res["WorkerRole"]["Properties"]["Policies"][0]["PolicyDocument"]
    assert any(
        "autoscaling:SetInstanceHealth" in s["Action"] for s in worker_statements["Statement"]
    )
    assert "--report" in (BOOT / "units" / "rapid-health.service").read_text()


def test_the_load_balancer_routes_only_the_public_paths(template: dict[str, Any]) -> None:
    res = resources(template)
    listener = res["HttpsListener"]["Properties"]
    (default,) = listener["DefaultActions"]
    assert default["Type"] == "fixed-response"
    assert default["FixedResponseConfig"]["StatusCode"] == "404"
    routed = []
    for rule in (
        r for r in res.values() if r["Type"] == "AWS::ElasticLoadBalancingV2::ListenerRule"
    ):
        (action,) = rule["Properties"]["Actions"]
        assert action == {"Type": "forward", "TargetGroupArn": {"Ref": "WebTargetGroup"}}
        for condition in rule["Properties"]["Conditions"]:
            routed += condition["PathPatternConfig"]["Values"]
    assert sorted(routed) == sorted(
        ["/webhooks/*", "/unsubscribe/*", "/l/*", "/api/*", "/dashboard*", "/healthz"]
    )


def iam_statements(template: dict[str, Any], *names: str) -> list[dict[str, Any]]:
    out = []
    for name in names:
        props = resources(template)[name]["Properties"]
        docs = [p["PolicyDocument"] for p in props.get("Policies", [])]
        docs += [props["PolicyDocument"]] if "PolicyDocument" in props else []
        for doc in docs:
            out += doc["Statement"]
    return out


def actions(statement: dict[str, Any]) -> list[str]:
    return statement["Action"] if isinstance(statement["Action"], list) else [statement["Action"]]


def resources_of(statement: dict[str, Any]) -> list[Any]:
    r = statement["Resource"]
    return r if isinstance(r, list) else [r]


def test_least_privilege(template: dict[str, Any]) -> None:
    web = iam_statements(template, "WebRole", "ProvisionerPolicy", "FleetLogsPolicy")
    worker = iam_statements(template, "WorkerRole", "FleetLogsPolicy")
    # Web instances may not subscribe anything to anything
    assert not any("sns:Subscribe" in actions(s) for s in web)
    # The DLQ tools can read and delete dead letters, and replay them into the intake
    dlq = {"Fn::GetAtt": ["IntakeDeadLetterQueue", "Arn"]}
    readers = [s for s in web if dlq in resources_of(s) and "sqs:ReceiveMessage" in actions(s)]
    assert readers and "sqs:DeleteMessage" in actions(readers[0])
    # Only web instances (the migration step) may read the master's secret; workers connect
    # as the application role
    master, app = {"Ref": "DatabaseMasterSecret"}, {"Ref": "DatabaseAppSecret"}
    assert any(master in resources_of(s) for s in web)
    assert not any(master in resources_of(s) for s in worker)
    assert any(app in resources_of(s) for s in worker)
    secrets = (
        user_data(template, "WorkerLaunchTemplate"),
        user_data(template, "WebLaunchTemplate"),
    )
    for script in secrets:
        assert "DATABASE_URL=<DatabaseAppSecret>" in script
    assert "DATABASE_MASTER_URL" not in secrets[0]
    # Logs go only to the fleet's own group
    (logs,) = [s for s in worker if "logs:PutLogEvents" in actions(s)]
    assert render(logs["Resource"], arn_env("p")) == (
        f"arn:aws:logs:{REGION}:{ACCOUNT}:log-group:/rapid/p:*"
    )


#: Alarms that must fire when their metric goes silent, because silence means death.
SILENCE_IS_DEATH = {
    "IntakeDeadAlarm",
    "SchedulerDeadAlarm",
    "NoHealthyHostAlarm",
    "DatabaseFreeStorageAlarm",
}


def test_the_alarm_set(template: dict[str, Any]) -> None:
    res = template["Resources"]
    alarms = {
        k: v
        for k, v in res.items()
        if isinstance(v, dict) and v.get("Type") == "AWS::CloudWatch::Alarm"
    }
    looped = {
        k: next(iter(v[2].values()))
        for k, v in res.items()
        if k.startswith("Fn::ForEach::") and "Alarm" in k
    }
    names = set(alarms) | set(looped)
    assert {
        "DeadLetterAlarm",
        "IntakeAgeAlarm",
        "IntakeDeadAlarm",
        "SchedulerDeadAlarm",
        "BlastStalledAlarm",
        "Fn::ForEach::RedisMemoryAlarms",
        "DatabaseFreeStorageAlarm",
        "LoadBalancer5xxAlarm",
        "UnhealthyHostsAlarm",
        "NoHealthyHostAlarm",
        "Fn::ForEach::FailureRateAlarms",
        "CarrierFilteringAlarm",
    } <= names
    every = {**alarms, **looped}
    for name, alarm in every.items():
        props = alarm["Properties"]
        assert props["AlarmActions"] == [{"Ref": "OpsTopic"}], name
        assert props["TreatMissingData"] in ("breaching", "notBreaching"), name
    for name in SILENCE_IS_DEATH:
        assert every[name]["Properties"]["TreatMissingData"] == "breaching", name
    age = alarm_metrics(alarms["IntakeAgeAlarm"]["Properties"])
    assert age[0]["MetricName"] == "ApproximateAgeOfOldestMessage"
    redis = alarm_metrics(looped["Fn::ForEach::RedisMemoryAlarms"]["Properties"])
    assert redis[0]["MetricName"] == "DatabaseMemoryUsagePercentage"


def test_stateful_resources_say_what_happens_to_their_data(template: dict[str, Any]) -> None:
    res = resources(template)
    assert res["Database"]["DeletionPolicy"] == res["Database"]["UpdateReplacePolicy"] == "Snapshot"
    assert res["Cache"]["DeletionPolicy"] == "Snapshot"
    db = res["Database"]["Properties"]
    assert db["MaxAllocatedStorage"] == {"Ref": "DBMaxAllocatedStorage"}
    assert db["PreferredMaintenanceWindow"] == {"Ref": "DBMaintenanceWindow"}
    assert db["PreferredBackupWindow"] == {"Ref": "DBBackupWindow"}
    assert db["DeletionProtection"] == {"Ref": "DBDeletionProtection"}
    assert res["Cache"]["Properties"]["PreferredMaintenanceWindow"] == {
        "Ref": "CacheMaintenanceWindow"
    }
    # The master secret outlives the stack: the final snapshot's password is in it
    assert res["DatabaseMasterSecret"]["DeletionPolicy"] == "Retain"
    # The AMI is pinned: no SSM "latest" parameter
    assert template["Parameters"]["ImageId"]["Type"] == "AWS::EC2::Image::Id"
    assert "Default" not in template["Parameters"]["ImageId"]


def test_every_checkov_suppression_is_justified() -> None:
    for path in (TEMPLATE,):
        for line in path.read_text().splitlines():
            if "checkov:skip=" in line:
                _, _, reason = line.partition(":")[2].partition(":")
                assert len(reason.strip()) > 10, line


def test_migrations_after_the_first_build_indexes_concurrently() -> None:
    # A rolling update runs the new release's migrations while the old one serves: an index on
    # a table that already exists must not lock its writes (CREATE INDEX CONCURRENTLY, inside
    # an autocommit block). Indexes on tables created by the same migration are exempt.
    versions = ROOT / "messaging" / "store" / "migrations" / "versions"
    for path in sorted(versions.glob("*.py")):
        if path.name.startswith("0001_"):
            continue
        tree = ast.parse(path.read_text())
        created = {
            c.args[0].value
            for c in ast.walk(tree)
            if isinstance(c, ast.Call)
            and getattr(c.func, "attr", "") == "create_table"
            and c.args
            and isinstance(c.args[0], ast.Constant)
        }
        for call in ast.walk(tree):
            if not (
                isinstance(call, ast.Call) and getattr(call.func, "attr", "") == "create_index"
            ):
                continue
            table = (
                call.args[1].value
                if len(call.args) > 1 and isinstance(call.args[1], ast.Constant)
                else None
            )
            concurrent = any(
                k.arg == "postgresql_concurrently" and getattr(k.value, "value", False)
                for k in call.keywords
            )
            assert concurrent or table in created, (
                f"{path.name}: index on {table} without CONCURRENTLY"
            )


def test_publishers_may_only_publish_to_alert_topics(template: dict[str, Any]) -> None:
    doc = render(
        resources(template)["PublisherPolicy"]["Properties"]["PolicyDocument"], arn_env("p")
    )
    assert doc["Statement"] == [
        {
            "Sid": "PublishAlerts",
            "Effect": "Allow",
            "Action": "sns:Publish",
            "Resource": f"arn:aws:sns:{REGION}:{ACCOUNT}:p-alert-*",
        }
    ]


@pytest.mark.integration
def test_rapid_env_hands_processes_an_environment_the_settings_accept(
    moto_url: str, tmp_path: Path, prefix: str
) -> None:
    # Given secrets as the stack holds them: the app role's and the master's JSON database
    # secrets (with URL-hostile characters), a generated Redis token, a provider token not
    # filled in yet, and a channel left out (empty ARN)
    sm = moto_client("secretsmanager", moto_url)
    password = 'p@ss:w/rd"$`\\%'

    def secret(name: str, value: str) -> str:
        return str(sm.create_secret(Name=f"{prefix}/{name}", SecretString=value)["ARN"])

    refs = {
        "DATABASE_URL": secret("db", json.dumps({"username": "rapid_app", "password": password})),
        "DATABASE_MASTER_URL": secret("master", json.dumps({"username": "rapid", "password": "m"})),
        "REDIS_URL": secret("redis", "tok3n"),
        "TWILIO_AUTH_TOKEN": secret("twilio", "REPLACE_ME"),
        "SENDGRID_API_KEY": "",
        "RAPID_API_TOKEN": secret("api", "a" * 48),
    }
    (tmp_path / "secrets.env").write_text("".join(f"{k}={v}\n" for k, v in refs.items()))
    (tmp_path / "static.env").write_text(
        f"RAPID_PREFIX={prefix}\nAWS_REGION={REGION}\nTWILIO_MESSAGING_SERVICE_SID=\n"
        'ORG_POSTAL_ADDRESS=1 Main St, "Suite $5", Springfield\n'
        "_DB_ADDRESS=db.internal:5432\n_DB_NAME=rapid\n_REDIS_ADDRESS=cache.internal:6379\n"
    )
    run_env = {k: v for k, v in os.environ.items() if not k.startswith(("RAPID_", "AWS_"))}
    run_env.update(
        AWS_ENDPOINT_URL=moto_url, AWS_ACCESS_KEY_ID="testing", AWS_SECRET_ACCESS_KEY="testing"
    )
    dump = "import json, os; print(json.dumps(dict(os.environ)))"

    # When rapid-env starts a process (as every rapid@ unit does)
    result = subprocess.run(
        [
            sys.executable,
            str(BOOT / "rapid-env"),
            "--etc",
            str(tmp_path),
            "exec",
            sys.executable,
            "-c",
            dump,
        ],
        env=run_env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr

    # Then the process has the values, nothing was written to disk, and the settings accept them
    assert sorted(p.name for p in tmp_path.iterdir()) == ["secrets.env", "static.env"]
    environ = json.loads(result.stdout)
    ours = {
        k: v
        for k, v in environ.items()
        if k.startswith(("RAPID_", "DATABASE", "REDIS", "TWILIO", "SENDGRID", "ORG_", "AWS_R"))
    }
    assert "TWILIO_AUTH_TOKEN" not in ours  # REPLACE_ME counts as unset
    assert "SENDGRID_API_KEY" not in ours  # a channel not deployed
    assert "TWILIO_MESSAGING_SERVICE_SID" not in ours  # empty parameters too
    assert "DATABASE_MASTER_URL" not in ours  # never handed to a process
    assert ours["ORG_POSTAL_ADDRESS"] == '1 Main St, "Suite $5", Springfield'
    settings = load_settings(ours)
    url = make_url(settings.database_url)
    assert (url.drivername, url.username, url.password) == (
        "postgresql+psycopg",
        "rapid_app",
        password,
    )
    assert (url.host, url.port, url.database) == ("db.internal", 5432, "rapid")
    assert url.query == {"sslmode": "require"}
    assert settings.redis_url == "rediss://:tok3n@cache.internal:6379/0"
    assert settings.api_token == "a" * 48
