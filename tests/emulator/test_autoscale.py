"""Autoscale on emulator pools: formulas from the formula-language package, applied like Batch."""

from __future__ import annotations

import datetime
from typing import Any

import pytest
from azure.batch import models as m
from azure.core.exceptions import HttpResponseError, ResourceExistsError

from tests.emulator.helpers import (
    UBUNTU,
    error_code,
    make_job,
    task,
    unique,
    wait_for,
    wait_nodes,
)
from tests.fixtures.emulator import make_client

pytestmark = pytest.mark.emulator

FIVE_MINUTES = datetime.timedelta(minutes=5)


def _autoscale_pool(client: Any, formula: str) -> str:
    pool_id = unique("auto")
    client.create_pool(
        m.BatchPoolCreateOptions(
            id=pool_id,
            vm_size="standard_d2s_v3",
            virtual_machine_configuration=UBUNTU,
            enable_auto_scale=True,
            auto_scale_formula=formula,
            auto_scale_evaluation_interval=FIVE_MINUTES,
        )
    )
    return pool_id


def test_formula_sets_targets_and_evaluate(batch_client: Any) -> None:
    pool_id = _autoscale_pool(
        batch_client, "$TargetDedicatedNodes = 2; $NodeDeallocationOption = taskcompletion;"
    )
    wait_nodes(batch_client, pool_id, 2)
    pool = batch_client.get_pool(pool_id)
    assert pool.enable_auto_scale is True
    assert pool.target_dedicated_nodes == 2
    assert "$TargetDedicatedNodes=2" in pool.auto_scale_run.results
    assert pool.auto_scale_run.error is None
    run = batch_client.evaluate_pool_auto_scale(
        pool_id,
        m.BatchPoolEvaluateAutoScaleOptions(
            auto_scale_formula="$x = 3; $TargetDedicatedNodes = $x * 2;"
        ),
    )
    assert "$TargetDedicatedNodes=6" in run.results and "$x=3" in run.results
    with pytest.raises(ResourceExistsError) as exc:
        batch_client.begin_resize_pool(pool_id, m.BatchPoolResizeOptions(target_dedicated_nodes=1))
    assert error_code(exc) == "AutoScaleEnabled"
    batch_client.disable_pool_auto_scale(pool_id)
    pool = batch_client.get_pool(pool_id)
    assert pool.enable_auto_scale is False and pool.auto_scale_formula is None
    batch_client.begin_resize_pool(
        pool_id, m.BatchPoolResizeOptions(target_dedicated_nodes=1), polling_interval=0.05
    ).result()
    wait_nodes(batch_client, pool_id, 1)


def test_bad_formulas_are_400(batch_client: Any) -> None:
    with pytest.raises(HttpResponseError) as exc:
        _autoscale_pool(batch_client, "$TargetDedicatedNodes = ;")
    assert exc.value.status_code == 400
    assert error_code(exc) == "AutoScalingFormulaSyntaxError"
    pool_id = _autoscale_pool(batch_client, "$TargetDedicatedNodes = 0;")
    with pytest.raises(HttpResponseError) as bad:
        batch_client.enable_pool_auto_scale(
            pool_id,
            m.BatchPoolEnableAutoScaleOptions(
                auto_scale_formula="$TargetDedicatedNodes = (1;",
                auto_scale_evaluation_interval=FIVE_MINUTES,
            ),
        )
    assert bad.value.status_code == 400
    with pytest.raises(HttpResponseError) as short:
        batch_client.enable_pool_auto_scale(
            pool_id,
            m.BatchPoolEnableAutoScaleOptions(
                auto_scale_formula="$TargetDedicatedNodes = 1;",
                auto_scale_evaluation_interval=datetime.timedelta(minutes=1),
            ),
        )
    assert error_code(short) == "InvalidPropertyValue"


def test_pending_tasks_drive_scaling_over_sampled_history(emulator_factory: Any) -> None:
    client = make_client(emulator_factory(time_scale=0.002))
    formula = "$TargetDedicatedNodes = min(3, max($PendingTasks.GetSample(1)));"
    pool_id = _autoscale_pool(client, formula)
    assert client.get_pool(pool_id).target_dedicated_nodes == 0
    job_id = make_job(client, pool_id)
    client.create_tasks(job_id, [task(f"t{i}", "sleep 2") for i in range(5)])
    wait_for(
        lambda: client.get_pool(pool_id),
        lambda p: p.target_dedicated_nodes == 3,
        20,
        "autoscale to raise the target to 3",
    )
    wait_nodes(client, pool_id, 3, states=("idle", "running"))
    client.close()
