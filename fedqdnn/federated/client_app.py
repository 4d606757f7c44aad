"""Flower ClientApp: the message handlers of a simulated device (the device is
:mod:`fedqdnn.device`; this module only translates Flower messages to and from it).

A client learns which device it simulates from its instruction (a pool of simulation nodes
serves the devices in turn: the server names the device) or from its node config's
``partition-id``. Under ``fleet = "declared"`` (real devices) the node *is* its device: its
hardware and data come from its node config only (:mod:`fedqdnn.node_declaration`), it tells
the server its declaration when queried, and it trains only the modes the server planned for
it, refusing a plan beyond its hardware. A client trains the modes its plan allows and
replies with the shared weights plus the per-mode entries of the modes it trained only, or with
a status (offline, straggler). It computes on the torch device ``device`` selects: CUDA under
``auto`` when Ray gave its actor a GPU share.
"""

from __future__ import annotations

import functools
import os
import sys

import numpy as np
import torch
from flwr.app import ConfigRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp

from fedqdnn.accelerator import select_device
from fedqdnn.config import FederatedConfig, FleetSource, from_flat
from fedqdnn.costs import array_bytes
from fedqdnn.device import (
    SimulatedDevice,
    declare,
    declared_device,
    device_for,
    evaluate_locally,
    evaluation_mode,
    load_state,
    plan_round,
    skipped_round_report,
    train_round,
)
from fedqdnn.node_declaration import NodeSpec, parse_node_config
from fedqdnn.schema import (
    ARRAYS,
    CONFIG,
    DECLARATION,
    INFO,
    METRICS,
    PARTITION_ID,
    DeviceInfo,
    EvaluationReport,
    Identity,
    Instruction,
    RoundStatus,
    TrainReport,
    read_instruction,
)
from strategies.records import to_arrayrecord, to_torch_state

app = ClientApp()


@functools.cache
def use_cpu_share() -> int:
    """Torch threads = this worker's CPU share (Ray sets OMP_NUM_THREADS to the actor's
    num_cpus); more threads than the share would only contend with other clients."""
    threads = max(1, int(float(os.environ.get("OMP_NUM_THREADS", "1"))))
    torch.set_num_threads(threads)
    return threads


def ray_gpu_share() -> bool | None:
    """Inside a Ray actor: whether Ray assigned it a GPU (``--gpus-per-client`` > 0; it then
    sees only that GPU). None outside Ray (a SuperNode of the deployment engine): a Ray worker
    has imported ray before it runs us, and importing it here would cost a device's process
    a second or more per message."""
    ray = sys.modules.get("ray")
    if ray is None:
        return None
    return bool(ray.get_gpu_ids()) if ray.is_initialized() else None


@functools.lru_cache(maxsize=4)
def _torch_device(spec: str) -> torch.device:
    """Where this worker's devices compute (selected once per worker and spec)."""
    return select_device(spec, gpu_share=ray_gpu_share())


@functools.lru_cache(maxsize=8)
def _parse(flat_items: tuple) -> FederatedConfig:
    return from_flat(dict(flat_items))


def _config(msg: Message) -> tuple[FederatedConfig, Instruction]:
    """The run config the server sent (parsed once per distinct config) and the instruction:
    round, the device the message is for (None when the server leaves it to the node:
    Flower's FedAvg), the modes planned for a declared device."""
    instruction = read_instruction(dict(msg.content[CONFIG]))
    return _parse(tuple(sorted(instruction.flat.items()))), instruction


def _node_spec(cfg: FederatedConfig, context: Context) -> NodeSpec:
    """This node's declaration (``fleet = "declared"``), from its node config."""
    return parse_node_config(dict(context.node_config), cfg)


def _device(cfg: FederatedConfig, context: Context, partition: int | None) -> SimulatedDevice:
    """The device a message is for. A declared fleet: this node's own device, whose hardware
    and data come from its node config only (``partition``: the id the server gave it).
    A simulated fleet: the device the message names, else this node's own (nodes map onto
    ``participants`` in order of their ``partition-id``)."""
    use_cpu_share()
    where = _torch_device(cfg.device)
    if cfg.fleet == FleetSource.DECLARED:
        if partition is None:
            raise ValueError("an instruction to a declared device must name its device id")
        return declared_device(cfg, _node_spec(cfg, context), partition, where)
    if partition is None:
        partition = cfg.participant_ids[int(context.node_config[PARTITION_ID])]
    return device_for(cfg, partition, where)


def _reply(
    msg: Message,
    info: DeviceInfo,
    metrics: TrainReport | EvaluationReport,
    arrays: dict[str, np.ndarray] | None = None,
) -> Message:
    content = {METRICS: MetricRecord(metrics.wire()), INFO: ConfigRecord(info.wire())}
    if arrays is not None:
        content[ARRAYS] = to_arrayrecord(arrays)
    return Message(content=RecordDict(content), reply_to=msg)


def _info(device: SimulatedDevice, status: RoundStatus | None = None) -> DeviceInfo:
    torch_device = None if status is None else str(device.x_train.device)
    return DeviceInfo(
        tier=device.tier,
        partition_id=device.partition_id,
        status=status,
        torch_device=torch_device,
    )


@app.train()
def train(msg: Message, context: Context) -> Message:
    """Train the modes this device's plan allows this round; reply with shared + trained-mode
    entries, or with a status (offline, straggler) and no arrays."""
    cfg, instruction = _config(msg)
    rnd = instruction.server_round
    device = _device(cfg, context, instruction.partition_id)
    arrays = msg.content[ARRAYS]
    bytes_down = array_bytes(arrays)
    plan = plan_round(cfg, device, rnd, bytes_down, instruction.modes)
    if plan.status != "trained":
        report = skipped_round_report(cfg, device, plan)
        return _reply(msg, _info(device, plan.status), report)
    load_state(device.model, to_torch_state(arrays))
    update = train_round(cfg, device, plan, rnd)
    return _reply(msg, _info(device, "trained"), update.report, update.state)


@app.query()
def identify(msg: Message, context: Context) -> Message:
    """Tell the server who this node is (node IDs are random per run): the partition it
    simulates, or (a declared fleet: the query carries the run config) the device it is,
    its hardware and its data. A bad node config fails here, in one line naming the key."""
    if CONFIG in msg.content:
        cfg, _ = _config(msg)
        if cfg.fleet == FleetSource.DECLARED:
            declaration = declare(cfg, _node_spec(cfg, context))
            info = {DECLARATION: declaration.model_dump_json(by_alias=True)}
            return Message(content=RecordDict({INFO: ConfigRecord(info)}), reply_to=msg)
    identity = Identity(partition_id=int(context.node_config[PARTITION_ID]))
    return Message(content=RecordDict({INFO: ConfigRecord(identity.wire())}), reply_to=msg)


@app.evaluate()
def evaluate_local(msg: Message, context: Context) -> Message:
    """Per-device accuracy: the global model at the top mode this device trains (its
    evaluation mode), on its local test split."""
    cfg, instruction = _config(msg)
    device = _device(cfg, context, instruction.partition_id)
    load_state(device.model, to_torch_state(msg.content[ARRAYS]))
    bits = evaluation_mode(cfg, device, instruction.modes)
    accuracy, loss = evaluate_locally(device, bits)
    report = EvaluationReport(
        num_examples=len(device.y_test), accuracy=accuracy, loss=loss, bits=bits
    )
    return _reply(msg, _info(device), report)
