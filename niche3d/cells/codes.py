"""Integer codes of the cell model, each declared once with its name.

States, actions, events and event counters are small integers that the numba kernels
compare and store (int8 columns, an int64 counter vector) and that the outputs name
(``STATE_NAMES``, ``EVENT_NAMES``, the ``total_*`` metrics). Every code is one row below,
``CONSTANT = TABLE.add("CONSTANT", "name")``: the code is the row's position in its
table, and the name list is read off the same table, so names and codes cannot drift.

The constants are plain module-level ints because numba freezes a global int into the
compiled kernel as a constant (no lookup at run time). The contact bits come from
:mod:`niche3d.tissue.contact`, which computes the per-voxel contact map.
"""

from __future__ import annotations

from niche3d.tissue.contact import C_ANG1, C_ENDO, C_OPN, C_SNO

__all__ = [
    "CodeTable",
    "STATES",
    "ACTIONS",
    "EVENTS",
    "COUNTERS",
    "STATE_NAMES",
    "EVENT_NAMES",
    "COUNTER_NAMES",
    "HSC_STATES",
    "LATTICE_STATES",
    "state_code",
    "C_ENDO",
    "C_ANG1",
    "C_SNO",
    "C_OPN",
]


class CodeTable:
    """An ordered table of named integer codes ``0, 1, 2, ...``.

    Parameters
    ----------
    kind
        What the codes are ("state", "event", ...), used in error messages.
    """

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._rows: list[tuple[str, str]] = []

    def add(self, constant: str, name: str) -> int:
        """Append a row and return its code (the row's position).

        Parameters
        ----------
        constant
            Name of the module constant that holds the code (checked by the tests).
        name
            Public name of the code (lower case, unique in the table).
        """
        if any(c == constant or n == name for c, n in self._rows):
            raise ValueError(f"{self.kind} {constant} / {name!r} is declared twice")
        self._rows.append((constant, name))
        return len(self._rows) - 1

    @property
    def names(self) -> tuple[str, ...]:
        """Public names in code order."""
        return tuple(n for _, n in self._rows)

    @property
    def constants(self) -> tuple[str, ...]:
        """Constant names in code order."""
        return tuple(c for c, _ in self._rows)

    def code(self, name: str) -> int:
        """Code of a public name (case and surrounding blanks ignored).

        Raises
        ------
        ValueError
            If the name is unknown; the message lists the allowed names.
        """
        key = str(name).strip().lower()
        names = self.names
        if key not in names:
            raise ValueError(f"unknown cell {self.kind} {name!r}; allowed: {', '.join(names)}")
        return names.index(key)

    def __len__(self) -> int:
        return len(self._rows)

    def __repr__(self) -> str:
        return f"CodeTable({self.kind!r}, {dict(zip(self.constants, range(len(self)), strict=True))})"


# ---------------------------------------------------------------- cell states (int8 column)
STATES = CodeTable("state")
S_DORMANT = STATES.add("S_DORMANT", "dormant")
S_G0 = STATES.add("S_G0", "active_g0")
S_G1 = STATES.add("S_G1", "active_g1")
S_SG2M = STATES.add("S_SG2M", "active_sg2m")
S_MPP = STATES.add("S_MPP", "mpp")
S_CIRC = STATES.add("S_CIRC", "circulating")
S_DEAD = STATES.add("S_DEAD", "dead")

# the kernels rely on this order: HSC states first (st <= S_SG2M), then the states that
# live on the lattice (st <= S_MPP), then blood and the removed marker
if not (S_DORMANT < S_G0 < S_G1 < S_SG2M < S_MPP < S_CIRC < S_DEAD):
    raise RuntimeError("cell state codes must keep the order HSC < MPP < blood < dead")

# ---------------------------------------------------------------- actions (rules -> apply pass)
ACTIONS = CodeTable("action")
A_NONE = ACTIONS.add("A_NONE", "none")
A_DEATH = ACTIONS.add("A_DEATH", "death")
A_EGRESS = ACTIONS.add("A_EGRESS", "egress")
A_DIVIDE = ACTIONS.add("A_DIVIDE", "divide")
A_EXIT = ACTIONS.add("A_EXIT", "exit")
A_HOME = ACTIONS.add("A_HOME", "home")
A_CLEAR = ACTIONS.add("A_CLEAR", "clear")

# ---------------------------------------------------------------- event kinds (int8 column)
EVENTS = CodeTable("event")
E_BIRTH = EVENTS.add("E_BIRTH", "birth")
E_DIVISION = EVENTS.add("E_DIVISION", "division")
E_STATE = EVENTS.add("E_STATE", "state_change")
E_DEATH = EVENTS.add("E_DEATH", "death")
E_EGRESS = EVENTS.add("E_EGRESS", "egress")
E_HOMING = EVENTS.add("E_HOMING", "homing")
E_EXIT = EVENTS.add("E_EXIT", "exit")
E_CLEARANCE = EVENTS.add("E_CLEARANCE", "clearance")

# ---------------------------------------------------------------- counters (int64 vector)
# names are the ``total_<name>`` metrics
COUNTERS = CodeTable("counter")
N_DIV = COUNTERS.add("N_DIV", "divisions")
N_DEATH = COUNTERS.add("N_DEATH", "deaths")
N_EGRESS = COUNTERS.add("N_EGRESS", "egress")
N_HOMING = COUNTERS.add("N_HOMING", "homing")
N_EXIT = COUNTERS.add("N_EXIT", "exits")
N_CLEAR = COUNTERS.add("N_CLEAR", "clearance")
N_WAIT = COUNTERS.add("N_WAIT", "division_waits")
N_PUSH = COUNTERS.add("N_PUSH", "division_pushes")
N_ASYM = COUNTERS.add("N_ASYM", "asymmetric_divisions")
N_HOME_FAIL = COUNTERS.add("N_HOME_FAIL", "homing_failures")
N_ACTIVATION = COUNTERS.add("N_ACTIVATION", "activations")  # dormant -> active G0
N_RETURN = COUNTERS.add("N_RETURN", "quiescence_returns")  # active G0 -> dormant
N_ENTRY = COUNTERS.add("N_ENTRY", "cycle_entries")  # active G0 -> G1
# division modes by the daughters' fates (renewal: two HSCs, asymmetric: HSC + MPP,
# differentiation: two MPPs), split by whether the two daughters sit on the same side of
# a niche border ("same") or on two sides of it ("border")
N_RENEW_SAME = COUNTERS.add("N_RENEW_SAME", "renewal_divisions_same_side")
N_RENEW_BORDER = COUNTERS.add("N_RENEW_BORDER", "renewal_divisions_border")
N_ASYM_SAME = COUNTERS.add("N_ASYM_SAME", "asymmetric_divisions_same_side")
N_ASYM_BORDER = COUNTERS.add("N_ASYM_BORDER", "asymmetric_divisions_border")
N_DIFF_SAME = COUNTERS.add("N_DIFF_SAME", "differentiating_divisions_same_side")
N_DIFF_BORDER = COUNTERS.add("N_DIFF_BORDER", "differentiating_divisions_border")
N_OFFSITE = COUNTERS.add("N_OFFSITE", "offsite_differentiations")  # HSC without a site -> MPP
N_COUNTERS = len(COUNTERS)

#: state codes (int8) used in snapshots and events, in code order
STATE_NAMES: tuple[str, ...] = STATES.names
#: event kinds (int8) in code order
EVENT_NAMES: tuple[str, ...] = EVENTS.names
#: event counters in code order (metrics ``total_<name>``)
COUNTER_NAMES: tuple[str, ...] = COUNTERS.names
#: codes of the HSC states (dormant, active G0, G1, S/G2/M)
HSC_STATES: tuple[int, ...] = (S_DORMANT, S_G0, S_G1, S_SG2M)
#: codes a cell may be placed on the lattice with
LATTICE_STATES: tuple[int, ...] = (*HSC_STATES, S_MPP)


def state_code(name: str) -> int:
    """Code of a state name (see :data:`STATE_NAMES`).

    Raises
    ------
    ValueError
        If the name is unknown.
    """
    return STATES.code(name)
