"""inspire_sim: emulated Inspire RH56 hands, each behind its own Modbus TCP server (127.0.0.1 by default).

One process serves the hands listed in ``hands`` ("left,right", "left" or "right"), one server and port per
hand, exactly like two hands on the robot network. To cut one hand's link in a fault test, run one process
per hand (``hands:=left`` / ``hands:=right``, distinct node names) and stop/start that process.

ROS side (controls only; the driver talks to the emulator over Modbus alone): dynamic parameters
``max_speed`` (finger speed at SPEED_SET 1000, units/s), ``left_contact_angle`` / ``right_contact_angle``
(an object in the hand stops closing fingers there and builds force; -1 = empty hand) and
``left_inject_error`` / ``right_inject_error`` (ERROR bits set on every finger, e.g. 1 = stall; the hand
freezes with STATUS 7 until CLEAR_ERROR is written over Modbus; 0 clears).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from rclpy.node import Node

from h1_training.nodes.common import ParamsMixin, run_node
from h1_training.params import param
from h1_training.sim.inspire_model import InspireHandModel, InspireModbusServer

LOOPBACK = ("127.0.0.1", "localhost", "::1")


@dataclass
class InspireSimParams:
    """The parameters of this node: the one declaration (see nodes/common.py)."""

    host: str = param("127.0.0.1", "address the Modbus servers bind (loopback unless you mean to expose them)",
        read_only=True)
    hands: str = param("left,right", "which hands this process serves", choices=("left,right", "left", "right"),
        read_only=True)
    left_port: int = param(6001, "left hand Modbus TCP port", min=1, max=65535, read_only=True)
    right_port: int = param(6002, "right hand Modbus TCP port", min=1, max=65535, read_only=True)
    left_unit: int = param(1, "left hand Modbus unit id", min=0, max=247, read_only=True)
    right_unit: int = param(1, "right hand Modbus unit id", min=0, max=247, read_only=True)
    max_speed: float = param(2000.0, "finger speed at SPEED_SET 1000 [register units/s] (full stroke 1000)", min=1.0,
        max=100000.0)
    left_contact_angle: int = param(-1, "object contact angle for the left hand, -1 = empty hand", min=-1, max=1000)
    right_contact_angle: int = param(-1, "object contact angle for the right hand, -1 = empty hand", min=-1, max=1000)
    left_inject_error: int = param(0, "ERROR bits to set on every left finger (1 stall, 2 over-temp, "
        "4 over-current, 8 motor, 16 comms); 0 clears", min=0, max=255)
    right_inject_error: int = param(0, "ERROR bits to set on every right finger; 0 clears", min=0, max=255)


class InspireSim(ParamsMixin, Node):
    PARAMS = InspireSimParams

    def __init__(self) -> None:
        super().__init__("inspire_sim")
        self.declare_specs()
        # pymodbus logs every bad request (an unknown unit with a traceback): the driver reports link trouble
        logging.getLogger("pymodbus").setLevel(logging.CRITICAL)
        p = self.p
        if p["host"] not in LOOPBACK:
            self.get_logger().warning(f"inspire_sim binds {p['host']}: reachable from other machines")
        self.models: dict[str, InspireHandModel] = {}
        self.servers: list[InspireModbusServer] = []
        for hand in p["hands"].split(","):
            model = InspireHandModel(unit=p[f"{hand}_unit"], max_speed=p["max_speed"],
                                     contact_angle=p[f"{hand}_contact_angle"])
            if p[f"{hand}_inject_error"]:
                model.inject_error(p[f"{hand}_inject_error"])
            server = InspireModbusServer(model, p["host"], p[f"{hand}_port"])
            server.start()  # raises (and the process exits with the reason) when the port is taken
            self.models[hand] = model
            self.servers.append(server)
            self.get_logger().info(f"{hand} hand emulator: Modbus TCP on {p['host']}:{p[f'{hand}_port']} "
                                   f"unit {p[f'{hand}_unit']}")

    def on_params_changed(self, changed: dict) -> None:
        for name, value in changed.items():
            if name == "max_speed":
                for model in self.models.values():
                    model.set_max_speed(value)
                continue
            hand, _, what = name.partition("_")
            model = self.models.get(hand)
            if model is None:
                continue
            if what == "contact_angle":
                model.set_contact_angle(value)
            elif what == "inject_error":
                model.inject_error(value)
                self.get_logger().info(f"{hand} hand: ERROR bits {value} on every finger")

    def close(self) -> None:
        for server in self.servers:
            server.stop()


def main(args=None) -> None:
    run_node(InspireSim, args)


if __name__ == "__main__":
    main()
