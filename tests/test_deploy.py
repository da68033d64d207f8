"""The CloudFormation template: cfn-lint clean, and consistent with the code it deploys.

Either the template or ``rapid provision`` may own the SNS/SQS resources, so the names and
attributes must be the same; the metrics the template scales and alarms on must be the ones
``queues/backlog.py`` publishes; the systemd units must run the Procfile's processes.
Nothing here calls real AWS: the AWS checks run against the moto server.
"""

from __future__ import annotations

import json
import math
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import boto3
import pytest
from cfnlint.decode.cfn_yaml import load as load_cfn_yaml
from sqlalchemy.engine import make_url

from config.names import Names
from config.settings import load_settings
from queues import provision
from queues.backlog import NAMESPACE, BacklogPublisher, Outcomes
from queues.provision import Provisioner, ProvisionReport

ROOT = Path(__file__).resolve().parent.parent
TEMPLATE = ROOT / "deploy" / "cloudformation" / "rapid-response.yaml"

#: One worker instance's measured rates (docs/benchmarks.md, docs/scaling.md): the inputs of
#: WorkerMaxSize's formula.
SMS_PER_INSTANCE = 500
EMAIL_PER_INSTANCE = 4000

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
    assert set(dlq) == {"QueueName", "MessageRetentionPeriod"}  # nothing provision lacks


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
    kw = {
        "endpoint_url": moto_url,
        "region_name": REGION,
        "aws_access_key_id": "testing",
        "aws_secret_access_key": "testing",
    }
    clients = {name: boto3.client(name, **kw) for name in ("sns", "sqs", "cloudwatch")}
    yield clients
    for client in clients.values():
        client.close()


@pytest.mark.integration
def test_provision_finds_nothing_to_change_in_what_the_template_creates(
    template: dict[str, Any], aws: dict[str, Any], prefix: str
) -> None:
    # Given the queues, queue policy, topic and subscription created as the template does
    env, res = arn_env(prefix), resources(template)
    sqs, sns = aws["sqs"], aws["sns"]
    dlq = render(res["IntakeDeadLetterQueue"]["Properties"], env)
    sqs.create_queue(QueueName=dlq.pop("QueueName"), Attributes={k: str(v) for k, v in dlq.items()})
    intake = render(res["IntakeQueue"]["Properties"], env)
    policy = render(res["IntakeQueuePolicy"]["Properties"]["PolicyDocument"], env)
    attributes = {k: str(v) for k, v in intake.items() if k not in ("QueueName", "RedrivePolicy")}
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
    """(name, dimensions) of every datum the publisher sends."""
    backlog = {(c, p): 1 for c in ("sms", "email") for p in ("urgent", "normal", "bulk")}
    data = BacklogPublisher(None, NAMESPACE, prefix).metric_data(
        backlog, Outcomes({"sms": 1, "email": 1}, {"sms": 0, "email": 0}, 0)
    )
    return {
        (d["MetricName"], tuple(sorted((x["Name"], x["Value"]) for x in d["Dimensions"])))
        for d in data
    }


def test_every_metric_the_template_reads_is_published_with_the_same_dimensions(
    template: dict[str, Any],
) -> None:
    # Given every metric of our namespace in the template, Channel expanded from its loop
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
    assert len(found) >= 6  # the scaling metric, and two per alarm
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
def test_the_scaling_policy_queries_read_the_published_backlog(
    template: dict[str, Any], aws: dict[str, Any], prefix: str
) -> None:
    # Given a backlog of 56 published by the fleet, and 4 in-service worker instances
    cloudwatch = aws["cloudwatch"]
    backlog = {("sms", "urgent"): 35, ("email", "urgent"): 12, ("email", "bulk"): 9}
    BacklogPublisher(cloudwatch, NAMESPACE, prefix).publish(backlog)
    cloudwatch.put_metric_data(
        Namespace="AWS/AutoScaling",
        MetricData=[
            {
                "MetricName": "GroupInServiceInstances",
                "Dimensions": [{"Name": "AutoScalingGroupName", "Value": f"{prefix}-workers"}],
                "Value": 4.0,
            }
        ],
    )
    # When the policy's own metric queries run (moto does not evaluate metric math, so the
    # inputs are fetched and the expression is applied here)
    spec = resources(template)["WorkerBacklogScaling"]["Properties"]
    queries = render(
        spec["TargetTrackingConfiguration"]["CustomizedMetricSpecification"]["Metrics"],
        {"Prefix": prefix},
    )
    stats = [
        {"Id": q["Id"], "MetricStat": {**q["MetricStat"], "Period": 60}, "ReturnData": True}
        for q in queries
        if "MetricStat" in q
    ]
    (expression,) = [q for q in queries if "Expression" in q]
    assert expression["Expression"] == "backlog / instances" and expression["ReturnData"]
    now = datetime.now(UTC)
    response = cloudwatch.get_metric_data(
        MetricDataQueries=stats,
        StartTime=now - timedelta(minutes=10),
        EndTime=now + timedelta(minutes=1),
    )
    values = {r["Id"]: r["Values"] for r in response["MetricDataResults"]}
    # Then both inputs are found, and the policy tracks 56 / 4 = 14 recipients per instance
    assert values == {"backlog": [56.0], "instances": [4.0]}
    assert values["backlog"][0] / values["instances"][0] == 14.0


def test_worker_max_size_default_follows_the_provider_limit_formula(
    template: dict[str, Any],
) -> None:
    # MaxSize = max(2, ceil(SmsRateAccount / 500 + EmailRate / 4000)): instances beyond it
    # only wait on the fleet-wide limiter
    sms = float(parameter_default(template, "SmsRateAccount"))
    email = float(parameter_default(template, "EmailRate"))
    expected = max(2, math.ceil(sms / SMS_PER_INSTANCE + email / EMAIL_PER_INSTANCE))
    assert int(parameter_default(template, "WorkerMaxSize")) == expected
    description = template["Parameters"]["WorkerMaxSize"]["Description"]
    assert "SmsRateAccount / 500" in description and "EmailRate / 4000" in description


# --- instances: the Procfile's processes as systemd units ---------------------------------------


def user_data(template: dict[str, Any], launch_template: str) -> str:
    """The whole user data script of one launch template, with placeholders for references."""
    data = resources(template)[launch_template]["Properties"]["LaunchTemplateData"]
    separator, (header, body) = data["UserData"]["Fn::Base64"]["Fn::Join"]
    env = {"Prefix": "rapid", "AWS::Region": REGION, "AWS::StackName": "rapid-stack"}
    mapping = body["Fn::FindInMap"]
    text = template["Mappings"][mapping[0]][mapping[1]][mapping[2]]
    return str(separator).join([sub(header["Fn::Sub"], env), text])


def procfile() -> dict[str, str]:
    lines = (ROOT / "Procfile").read_text().splitlines()
    return dict(line.split(": ", 1) for line in lines if line.strip())


@pytest.mark.parametrize("launch_template", ["WorkerLaunchTemplate", "WebLaunchTemplate"])
def test_user_data_is_valid_bash_and_python(template: dict[str, Any], launch_template: str) -> None:
    script = user_data(template, launch_template)
    assert script.startswith("#!/bin/bash\n")
    checked = subprocess.run(
        ["bash", "-n"], input=script, capture_output=True, text=True, check=False
    )
    assert checked.returncode == 0, checked.stderr
    compile(heredoc(script, "/usr/local/bin/rapid-env", "PY"), "rapid-env", "exec")


def heredoc(script: str, path: str, delimiter: str) -> str:
    """The text a ``cat > PATH <<'DELIM'`` heredoc of ``script`` writes."""
    start = script.index(f"cat > {path} <<'{delimiter}'\n") + len(f"cat > {path} <<'{delimiter}'\n")
    return script[start : script.index(f"\n{delimiter}\n", start) + 1]


def test_every_procfile_process_runs_as_a_systemd_unit_that_drains(
    template: dict[str, Any],
) -> None:
    worker, web = (user_data(template, lt) for lt in ("WorkerLaunchTemplate", "WebLaunchTemplate"))
    unit = heredoc(worker, "/etc/systemd/system/rapid@.service", "UNIT")
    # Each unit runs `rapid <process>`, as the Procfile line does
    assert "ExecStart=/opt/rapid/venv/bin/rapid %i $ARGS" in unit
    assert all(command == f"rapid {name}" for name, command in procfile().items())
    # SIGTERM to the main process only; 35 s, since every process drains within 30 s
    assert "KillMode=mixed" in unit and "KillSignal=SIGTERM" in unit
    assert "TimeoutStopSec=35" in unit
    # Every Procfile process is enabled on exactly one kind of instance
    units = {
        role: re.search(r'^UNITS="([^"]*)"', script, re.M).group(1).split()  # type: ignore[union-attr]
        for role, script in (("worker", worker), ("web", web))
    }
    enabled = [u for us in units.values() for u in us if u.startswith("rapid@")]
    assert sorted(enabled) == sorted(f"rapid@{name}.service" for name in procfile())
    assert units["worker"] == [
        "rapid@intake.service",
        "rapid@sender.service",
        "rapid-drain.service",
    ]
    # And the drain watcher stops the workers before completing the lifecycle action
    drain = heredoc(worker, "/usr/local/bin/rapid-drain", "SH")
    assert drain.index("systemctl stop rapid@intake.service rapid@sender.service") < drain.index(
        "complete-lifecycle-action"
    )


def test_worker_group_drains_on_termination_and_scales_on_backlog(template: dict[str, Any]) -> None:
    res = resources(template)
    group = res["WorkerGroup"]["Properties"]
    (hook,) = group["LifecycleHookSpecificationList"]
    assert hook["LifecycleTransition"] == "autoscaling:EC2_INSTANCE_TERMINATING"
    assert render(hook["LifecycleHookName"], {"Prefix": "rapid"}) == "rapid-drain"
    assert render(group["AutoScalingGroupName"], {"Prefix": "rapid"}) == "rapid-workers"
    assert group["MaxSize"] == {"Ref": "WorkerMaxSize"}
    policy = res["WorkerBacklogScaling"]["Properties"]
    assert policy["PolicyType"] == "TargetTrackingScaling"
    assert policy["TargetTrackingConfiguration"]["TargetValue"] == {
        "Ref": "TargetBacklogPerInstance"
    }


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
def test_rapid_env_writes_an_environment_the_settings_accept(
    template: dict[str, Any], moto_url: str, tmp_path: Path, prefix: str
) -> None:
    # Given secrets as the stack holds them: a provider token not filled in yet, the JSON
    # database secret (here with URL-hostile characters), a generated Redis token
    sm = boto3.client(
        "secretsmanager",
        endpoint_url=moto_url,
        region_name=REGION,
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )
    password = 'p@ss:w/rd"$`\\%'

    def secret(name: str, value: str) -> str:
        return str(sm.create_secret(Name=f"{prefix}/{name}", SecretString=value)["ARN"])

    arns = {
        "DATABASE_URL": secret("db", json.dumps({"username": "rapid", "password": password})),
        "REDIS_URL": secret("redis", "tok3n"),
        "TWILIO_AUTH_TOKEN": secret("twilio", "REPLACE_ME"),
        "RAPID_API_TOKEN": secret("api", "a" * 48),
    }
    (tmp_path / "secrets.env").write_text("".join(f"{k}={v}\n" for k, v in arns.items()))
    (tmp_path / "static.env").write_text(
        f"RAPID_PREFIX={prefix}\nAWS_REGION={REGION}\nTWILIO_MESSAGING_SERVICE_SID=\n"
        'ORG_POSTAL_ADDRESS=1 Main St, "Suite $5", Springfield\n'
        "_DB_ADDRESS=db.internal:5432\n_DB_NAME=rapid\n_REDIS_ADDRESS=cache.internal:6379\n"
    )
    script = tmp_path / "rapid-env"
    script.write_text(
        heredoc(user_data(template, "WebLaunchTemplate"), "/usr/local/bin/rapid-env", "PY")
    )
    run_env = {k: v for k, v in os.environ.items() if not k.startswith(("RAPID_", "AWS_"))}
    run_env.update(
        AWS_ENDPOINT_URL=moto_url, AWS_ACCESS_KEY_ID="testing", AWS_SECRET_ACCESS_KEY="testing"
    )

    # When rapid-env runs (as ExecStartPre does)
    result = subprocess.run(
        [sys.executable, str(script), str(tmp_path)],
        env=run_env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "env").stat().st_mode & 0o077 == 0  # root-only

    # Then bash reads it back to the same values (systemd's EnvironmentFile quoting is the
    # shell's), and the settings accept them
    dumped = subprocess.run(
        [
            "bash",
            "-c",
            f'set -a; . "{tmp_path / "env"}"; exec "{sys.executable}" -c '
            '"import json, os; print(json.dumps(dict(os.environ)))"',
        ],
        env={"PATH": os.environ.get("PATH", "")},
        capture_output=True,
        text=True,
        check=True,
    )
    environ = json.loads(dumped.stdout)
    ours = {
        k: v
        for k, v in environ.items()
        if k.startswith(("RAPID_", "DATABASE", "REDIS", "TWILIO", "ORG_", "AWS_"))
    }
    assert "TWILIO_AUTH_TOKEN" not in ours  # REPLACE_ME counts as unset
    assert "TWILIO_MESSAGING_SERVICE_SID" not in ours  # empty parameters too
    assert ours["ORG_POSTAL_ADDRESS"] == '1 Main St, "Suite $5", Springfield'
    settings = load_settings(ours)
    url = make_url(settings.database_url)
    assert (url.drivername, url.username, url.password) == ("postgresql+psycopg", "rapid", password)
    assert (url.host, url.port, url.database) == ("db.internal", 5432, "rapid")
    assert url.query == {"sslmode": "require"}
    assert settings.redis_url == "rediss://:tok3n@cache.internal:6379/0"
    assert settings.api_token == "a" * 48
