"""Mechanistic CAR T / tumour model: effector, memory and exhausted CAR T cells.

A graph node (:class:`cartwin.graph.spec.ScaleModel`) for the intercellular
scale. It joins four published models and adds an exhausted phenotype:

* **Kimmel 2021** [1]_ (BioModels BIOMD0000001041): normal T cells ``N`` and
  CAR T cells ``C`` compete for a common niche; the CAR T net growth rate
  ``r_C(T) = rho_C + b (T - K_N)^2 / (a T^2 + (T - K_N)^2)`` is high while the
  total T-cell count ``T = N + C`` is low after lymphodepletion (homeostatic
  expansion) and falls to ``rho_C`` as normal T cells recover; growth follows
  the Gompertz law ``r_C(T) C ln(K_C / T)``. Tumour killing saturates in the
  CAR T count, ``gamma_B B C / (k_B + C)``. Units are Kimmel's BioModels
  units: T cells per µL of blood (whole-body count / 5e8), tumour in 10^9
  cells (~mL of tumour tissue).
* **Singh 2021** [2]_ and **Hardiansyah 2019** [3]_: antigen-driven expansion
  of effector cells that saturates in antigen (Singh's Emax form,
  Hardiansyah's ``f = B / (B + h)``) and effector/memory phenotypes.
* **CARTmath** (Barros 2021) [4]_: effector -> memory conversion at a constant
  rate (``epsilon``) and antigen-driven reconversion of memory to effector
  cells (``theta T C_M``). With the saturations switched off the model reduces
  to CARTmath (``tests/models/test_cart_tumour_validation.py``).
* **Paixão 2022** [5]_: an exhausted phenotype. Their equations could not be
  checked (``reference/clinical-facts.md`` §5.6 [U]); the form used here is an
  assumption, stated below.

Equations (t in days; ``stim = B / (B + K_stim)``; ``T = N + E + M + X``)::

    h     = r_C(T) ln(K_C / T)                           Kimmel homeostatic net growth
    h+    = (h + sqrt(h^2 + eps^2)) / 2, eps = 1e-3 /d    its positive part (smooth)
    a     = k_exp stim / (1 + S / IC50_S)                antigen-driven proliferation
    dN/dt = r_N N ln(K_N / T) - k_ld L(t) N              normal T cells
    dE/dt = (1 - f_M) u(t) / 5e8 + (a + h) E
            - (d_E + k_EM + k_EX stim) E + k_ME stim M   effector CAR T
    dM/dt = f_M u(t) / 5e8 + h+ M + k_EM E - k_ME stim M - d_M M  memory CAR T
    dX/dt = k_EX stim E - d_X X                          exhausted CAR T
    dB/dt = r_B B (1 - B / B_max) - gamma_B E / (k_B + E) B - k_br R(t) B
    (MM)  dP/dt = k_P (m_B B - P)                        serum M-protein

Exogenous inputs (coupling variables no model writes, see
:mod:`cartwin.graph.inputs`): ``u`` = ``cart_infusion_rate`` (cells/d),
``L`` = ``ld_exposure``, ``R`` = ``bridging_exposure``, ``S`` =
``steroid_exposure``, ``f_M`` = ``product_memory_fraction`` (a constant
input from the product's composition; a manufacturing model that writes this
coupling replaces the record's value).

Outputs (couplings): ``cart_total`` (E + M + X, /µL), ``tumour_burden``
(B, 10^9 cells), ``tumour_kill_rate`` (``gamma_B E / (k_B + E) B``, 10^9
cells/d; the rate of CAR T-tumour engagements that the cytokine model reads),
``normal_t_cells`` (N, /µL).

Assumptions added to the sources (each one a choice, not a published fact)
-------------------------------------------------------------------------
1. Only effector cells kill and proliferate on antigen; memory cells respond
   to antigen by reconverting to effectors (CARTmath); exhausted cells
   neither kill nor proliferate nor revert, and die at ``d_X``.
2. Exhaustion is driven by antigen: effectors become exhausted at rate
   ``k_EX stim`` (chronic stimulation), the simplest form consistent with
   Paixão 2022's description of exhaustion under persistent antigen.
3. Kimmel's homeostatic growth law acts on effector cells in full; memory
   cells share its expansion (positive part ``h+``) but not its competitive
   contraction, and decline at Stein 2019's slow rate ``d_M`` (beta 0.0032
   /d, half-life ~217 d) [6]_, so that CAR T persist for months as observed.
   Normal T cells are depleted by lymphodepletion at rate ``k_ld L(t)``
   (Kimmel start N(0) = 6 /µL after lymphodepletion instead).
4. Blood concentration = whole-body count / 5e8 for T cells (Kimmel's
   scaling), so ``cart_flow`` is the model's CAR T count per µL.
5. Corticosteroids reduce antigen-driven proliferation (factor
   ``1 / (1 + S / IC50_S)``) but not killing.
6. Tumour growth is logistic with a lethal burden ``B_max`` = 10^12 cells so
   that year-long forecasts stay finite; bridging therapy kills tumour cells
   at ``k_br R(t)``.
7. Observation models: SPD (cm²) = ``k_SPD B^(2/3)`` (area of a volume);
   LDH (U/L) = ``LDH_0 + k_LDH B``; M-protein follows Singh 2021's
   production/elimination (steady state ``m_B B``, elimination 0.117 /d);
   involved FLC (mg/L) = ``FLC_0 + k_FLC B`` (FLC half-life of hours, so
   algebraic); ALC (10^9/L) = ``T / (1000 f_T)`` with ``f_T`` = 0.7 the
   T-cell share of blood lymphocytes; qPCR (copies/µg) = ``q C``.

Known limits
------------
- B-ALL (leukaemic burden) has no observation model yet:
  :class:`CarTumourModel` accepts ``"LBCL"`` and ``"MM"`` only.
- Tumour extinction is not modelled (deterministic ODE); a residual of 1e-12
  cells can regrow. Kimmel 2021's stochastic extinction is out of scope.
- Priors for parameters without a published human value are assumptions,
  chosen so that the typical patient expands ~75-fold to a peak near day 7
  (see :data:`PRIOR_NOTES`); a virtual-population check is for a later issue.

References
----------
.. [1] Kimmel GJ, Locke FL, Altrock PM. The roles of T cell competition and
   stochastic extinction events in chimeric antigen receptor T cell therapy.
   Proc R Soc B 2021;288:20210229. doi:10.1098/rspb.2021.0229
.. [2] Singh AP, Chen W, Zheng X, et al. Bench-to-bedside translation of
   chimeric antigen receptor (CAR) T cells using a multiscale systems
   pharmacokinetic-pharmacodynamic model. CPT Pharmacometrics Syst Pharmacol
   2021;10(4):362-376. doi:10.1002/psp4.12598
.. [3] Hardiansyah D, Ng CM. Quantitative systems pharmacology model of
   chimeric antigen receptor T-cell therapy. Clin Transl Sci
   2019;12(4):343-349. doi:10.1111/cts.12636
.. [4] Barros LRC, Paixão EA, Valli AMP, et al. CARTmath - a mathematical
   model of CAR-T immunotherapy in preclinical studies of hematological
   cancers. Cancers 2021;13(12):2941. doi:10.3390/cancers13122941
.. [5] Paixão EA, Barros LRC, Fassoni AC, Almeida RC. Modeling
   patient-specific CAR-T cell dynamics: multiphasic kinetics via phenotypic
   differentiation. Cancers 2022;14(22):5576. doi:10.3390/cancers14225576
.. [6] Stein AM, Grupp SA, Levine JE, et al. Tisagenlecleucel model-based
   cellular kinetic analysis of chimeric antigen receptor-T cells. CPT
   Pharmacometrics Syst Pharmacol 2019;8(5):285-295. doi:10.1002/psp4.12388
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import jax.numpy as jnp
import numpy as np

from cartwin._jax import configure_jax
from cartwin.errors import ModelSpecificationError
from cartwin.graph.spec import Coupling, Observable, Parameter, Scalars, State
from cartwin.models.response import response_summary

configure_jax()

#: Diseases with a tumour observation model.
DISEASES = ("LBCL", "MM")

#: Whole-body T cells per "cell per µL of blood" (Kimmel 2021 BioModels units).
CELLS_PER_UL_EQUIVALENT = 5.0e8

#: Kimmel 2021 Table 1 in BioModels units (per µL; tumour in 10^9 cells).
KIMMEL_2021 = {
    "k_n": 500.0,
    "k_c": 139.0,
    "r_n": 0.17,
    "rho_c": 0.0251,
    "a": 0.423,
    "b": 0.525,
    "r_b": 0.01,
    "gamma_b": 1.15,
    "k_b": 4.05,
    "n0": 6.0,
    "c0": 0.36,
    "b0": 94.86,
}

#: Width of the smooth positive part of the homeostatic rate, 1/day.
_SMOOTH_RATE = 1e-3

_KIMMEL = "Kimmel 2021 Table 1, BIOMD0000001041, doi:10.1098/rspb.2021.0229"
_ASSUMED = "assumption (cartwin): "

#: Why each assumed prior median has its value (shown in reports).
PRIOR_NOTES = {
    "k_exp": "typical patient expands ~75-fold to ~25 cells/uL near day 7, the "
    "order of Stein 2019 Tmax 9.3 d (doi:10.1002/psp4.12388) and CARTITUDE-4 "
    "day 13",
    "k_stim": "antigen saturation at ~1e9 tumour cells (Hardiansyah h = 1e5 x "
    "1e9 cells is in other units); wide prior",
    "qpcr_per_cell": "ratio of CARTITUDE-1 mean Cmax 48 692 copies/ug to "
    "CARTITUDE-4 mean flow peak 1451 cells/uL is ~34; DNA of ~1.5e5 "
    "nucleated cells per ug gives 30-300",
}


def _p(name, unit, median, log_sd, source, lower=0.0, upper=float("inf")):
    return Parameter(name, unit, median, log_sd, lower, upper, source)


#: Parameters shared by both diseases (CAR T, normal T cells, tumour growth).
COMMON_PARAMETERS = (
    _p(
        "n_t0",
        "/uL",
        300.0,
        0.7,
        _ASSUMED + "pre-lymphodepletion T cells, below Kimmel K_N 500 /uL",
        1.0,
        5000.0,
    ),
    _p(
        "k_ld",
        "/d",
        1.2,
        0.5,
        _ASSUMED + "standard flu/cy lowers T cells "
        "~20-fold by day 0 (Kimmel N(0) 6 /uL)",
        0.01,
        50.0,
    ),
    _p("r_n", "/d", KIMMEL_2021["r_n"], 0.0, _KIMMEL),
    _p("k_n", "/uL", KIMMEL_2021["k_n"], 0.0, _KIMMEL),
    _p(
        "k_c",
        "/uL",
        KIMMEL_2021["k_c"],
        0.35,
        _KIMMEL + "; SD from quartiles [123, 193]",
        1.0,
        1e5,
    ),
    _p(
        "rho_c",
        "/d",
        KIMMEL_2021["rho_c"],
        0.4,
        _KIMMEL + "; SD from quartiles [0.0208, 0.0354]",
        1e-5,
        1.0,
    ),
    _p("a_signal", "1", KIMMEL_2021["a"], 0.0, _KIMMEL),
    _p("b_reconst", "/d", KIMMEL_2021["b"], 0.0, _KIMMEL),
    _p("k_exp", "/d", 0.6, 0.5, _ASSUMED + PRIOR_NOTES["k_exp"], 1e-4, 10.0),
    _p("k_stim", "10*9.{cells}", 1.0, 1.0, _ASSUMED + PRIOR_NOTES["k_stim"], 1e-6, 1e6),
    _p(
        "steroid_ic50",
        "1",
        1.0,
        0.0,
        _ASSUMED + "10 mg dexamethasone equivalent halves antigen-driven proliferation",
    ),
    _p(
        "d_e",
        "/d",
        0.16,
        0.5,
        "Stein 2019 fast contraction alpha 0.16 /d, doi:10.1002/psp4.12388",
        1e-3,
        10.0,
    ),
    _p(
        "k_em",
        "/d",
        0.005,
        1.0,
        "between Stein 2019 FB*alpha 0.0013 /d and "
        "CARTmath HDLM-2 epsilon 0.15 /d (mouse), doi:10.3390/cancers13122941",
        1e-6,
        5.0,
    ),
    _p(
        "k_me",
        "/d",
        0.05,
        0.0,
        _ASSUMED + "memory reconversion on antigen (CARTmath theta*T)",
    ),
    _p(
        "d_m",
        "/d",
        0.0032,
        0.86,
        "Stein 2019 slow decline beta 0.0032 /d, "
        "random effect 0.86, doi:10.1002/psp4.12388",
        1e-6,
        1.0,
    ),
    _p(
        "k_ex",
        "/d",
        0.1,
        1.0,
        _ASSUMED + "exhaustion under antigen "
        "(Paixao 2022 phenotype, equations unverified)",
        1e-6,
        10.0,
    ),
    _p("d_x", "/d", 0.3, 0.5, _ASSUMED + "exhausted cells short-lived", 1e-3, 10.0),
    _p(
        "gamma_b",
        "/d",
        KIMMEL_2021["gamma_b"],
        0.55,
        _KIMMEL + "; SD from quartiles [0.64, 1.35]",
        1e-3,
        50.0,
    ),
    _p("k_b", "/uL", KIMMEL_2021["k_b"], 0.0, _KIMMEL),
    _p("r_b", "/d", 0.02, 1.0, "Kimmel 2021 r_B range 0.01-0.5 /d", 1e-5, 2.0),
    _p("b_max", "10*9.{cells}", 1000.0, 0.0, _ASSUMED + "lethal burden 1e12 cells"),
    _p(
        "k_br",
        "/d",
        0.03,
        1.0,
        _ASSUMED + "one 3-agent bridging cycle removes ~30% of the tumour",
        1e-5,
        5.0,
    ),
    _p(
        "qpcr_per_cell",
        "{copies}/ug/(/uL)",
        100.0,
        1.0,
        _ASSUMED + PRIOR_NOTES["qpcr_per_cell"],
        0.1,
        1e5,
    ),
    _p("t_fraction", "1", 0.7, 0.0, _ASSUMED + "T cells ~70% of blood lymphocytes"),
    _p(
        "ldh_base",
        "U/L",
        180.0,
        0.3,
        _ASSUMED + "LDH without tumour, within the 140-280 U/L reference range",
        50.0,
        2000.0,
    ),
    _p(
        "ldh_per_tumour",
        "U/L/(10*9.{cells})",
        1.0,
        1.0,
        _ASSUMED + "a 95 mL tumour (Kimmel median) adds ~100 U/L",
        1e-4,
        1e3,
    ),
)

#: Tumour parameters of large B-cell lymphoma.
LBCL_PARAMETERS = (
    _p(
        "tumour0",
        "10*9.{cells}",
        KIMMEL_2021["b0"],
        1.0,
        _KIMMEL + " (median tumour 94.86 mL at the start of the simulation)",
        1e-3,
        1e4,
    ),
    _p(
        "spd_coef",
        "cm2/(10*9.{cells})2/3",
        1.44,
        0.7,
        _ASSUMED + "Kimmel's median tumour (94.86 mL) maps to an SPD of ~30 cm2",
        1e-3,
        1e3,
    ),
)

#: Tumour parameters of multiple myeloma (serum markers, Singh 2021).
MM_PARAMETERS = (
    _p(
        "tumour0",
        "10*9.{cells}",
        300.0,
        1.0,
        _ASSUMED + "plasma-cell burden 3e11 cells",
        1e-3,
        1e4,
    ),
    _p(
        "k_mprot",
        "/d",
        0.117,
        0.0,
        "Singh 2021 M-protein elimination Km 0.117 /d, doi:10.1002/psp4.12598",
    ),
    _p(
        "m_per_tumour",
        "g/dL/(10*9.{cells})",
        0.01,
        1.0,
        _ASSUMED + "3 g/dL at 3e11 plasma cells",
        1e-6,
        10.0,
    ),
    _p("flc_base", "mg/L", 15.0, 0.5, _ASSUMED + "polyclonal background FLC", 0.1, 1e3),
    _p(
        "flc_per_tumour",
        "mg/L/(10*9.{cells})",
        1.0,
        1.5,
        _ASSUMED + "300 mg/L at 3e11 plasma cells",
        1e-6,
        1e4,
    ),
)

_CART_STATES = (
    State("normal_t", "/uL", description="normal (non-CAR) T cells, Kimmel N"),
    State("effector", "/uL", description="effector CAR T cells"),
    State("memory", "/uL", description="memory CAR T cells"),
    State("exhausted", "/uL", description="exhausted CAR T cells"),
    State("tumour", "10*9.{cells}", description="tumour cells"),
)

_OBSERVABLES_COMMON = (
    Observable("cart_flow", "/uL", "log_additive", 0.5),
    Observable("cart_qpcr", "{copies}/ug", "log_additive", 0.56),
    Observable("alc", "10*9/L", "log_additive", 0.4),
    Observable("ldh", "U/L", "log_additive", 0.2),
)

_INPUTS = (
    Coupling("cart_infusion_rate", "{cells}/d", "CAR T cells infused per day"),
    Coupling("ld_exposure", "1", "lymphodepletion exposure (standard days)"),
    Coupling("bridging_exposure", "1", "bridging therapy exposure (agent units)"),
    Coupling("steroid_exposure", "1", "corticosteroid exposure (10 mg dex eq.)"),
    Coupling(
        "product_memory_fraction",
        "1",
        "memory share of the infused product (product composition)",
    ),
)

_OUTPUTS = (
    Coupling("cart_total", "/uL", "all CAR T cells per uL blood"),
    Coupling("tumour_burden", "10*9.{cells}", "tumour cells"),
    Coupling(
        "tumour_kill_rate",
        "10*9.{cells}/d",
        "CAR T killing (engagement) rate; drives IL-6",
    ),
    Coupling("normal_t_cells", "/uL", "normal T cells per uL blood"),
)


def kimmel_growth_rate(total_t: Any, params: Scalars) -> Any:
    """Kimmel 2021's CAR T net growth rate ``r_C(T)``, per day.

    Parameters
    ----------
    total_t : array_like
        Total T cells ``T = N + C`` per µL (BioModels units).
    params : mapping
        ``rho_c`` (/d), ``b_reconst`` (/d), ``a_signal`` (1), ``k_n`` (/µL).

    Returns
    -------
    array_like
        ``rho_C + b (T - K_N)^2 / (a T^2 + (T - K_N)^2)``; 0.550 /d at
        T = 6.36 and ``rho_C`` = 0.0251 /d at ``T = K_N`` with Kimmel's
        values (``reference/clinical-facts.md`` §5.2).
    """
    gap = (total_t - params["k_n"]) ** 2
    denominator = params["a_signal"] * total_t**2 + gap
    return params["rho_c"] + params["b_reconst"] * gap / denominator


@dataclass(frozen=True)
class CarTumourModel:
    """CAR T (effector/memory/exhausted) and tumour model of one disease.

    Parameters
    ----------
    disease : str
        ``"LBCL"`` (SPD and LDH observed) or ``"MM"`` (M-protein, involved
        FLC and LDH observed; one more state for serum M-protein).

    Notes
    -----
    Implements :class:`cartwin.graph.spec.ScaleModel`; see the module
    docstring for equations, units and assumptions. ``observed_from`` tells
    the calibration that CAR T assays are explained from infusion on only
    (earlier values are ignored and counted, as in the kinetics twin).
    """

    disease: str = "LBCL"
    name: str = "cart_tumour"
    version: str = "1.0"

    def __post_init__(self) -> None:
        if self.disease not in DISEASES:
            raise ModelSpecificationError(
                f"CarTumourModel.disease {self.disease!r} has no tumour "
                f"observation model; allowed: {DISEASES}"
            )

    # -- declarations ------------------------------------------------------
    @property
    def references(self) -> tuple[str, ...]:
        """DOIs of the source models."""
        return (
            "doi:10.1098/rspb.2021.0229",
            "doi:10.1002/psp4.12598",
            "doi:10.1111/cts.12636",
            "doi:10.3390/cancers13122941",
            "doi:10.3390/cancers14225576",
            "doi:10.1002/psp4.12388",
        )

    @property
    def parameters(self) -> tuple[Parameter, ...]:
        """Common parameters, then the disease's tumour parameters."""
        extra = LBCL_PARAMETERS if self.disease == "LBCL" else MM_PARAMETERS
        return COMMON_PARAMETERS + extra

    @property
    def states(self) -> tuple[State, ...]:
        """Five cell states, plus serum M-protein for MM."""
        if self.disease == "MM":
            return _CART_STATES + (State("m_protein", "g/dL"),)
        return _CART_STATES

    @property
    def observables(self) -> tuple[Observable, ...]:
        """CAR T assays, ALC, LDH and the disease's tumour markers."""
        if self.disease == "MM":
            return _OBSERVABLES_COMMON + (
                Observable("m_protein", "g/dL", "log_additive", 0.2),
                Observable("involved_flc", "mg/L", "log_additive", 0.3),
            )
        return _OBSERVABLES_COMMON + (Observable("spd", "cm2", "log_additive", 0.3),)

    @property
    def inputs(self) -> tuple[Coupling, ...]:
        """Exogenous drug and cell inputs (no model writes them)."""
        return _INPUTS

    @property
    def outputs(self) -> tuple[Coupling, ...]:
        """Couplings other models may read."""
        return _OUTPUTS

    @property
    def observed_from(self) -> dict[str, float]:
        """Earliest study day each observable is explained (CAR T from day 0)."""
        return {"cart_flow": 0.0, "cart_qpcr": 0.0}

    # -- dynamics ----------------------------------------------------------
    def initial_state(self, params: Scalars, covariates: Scalars) -> Any:
        """No CAR T cells before infusion; T cells and tumour at baseline."""
        cells = [params["n_t0"], 0.0, 0.0, 0.0, params["tumour0"]]
        if self.disease == "MM":
            cells.append(params["m_per_tumour"] * params["tumour0"])
        return jnp.asarray(cells, dtype=float)

    def rhs(self, t: Any, y: Any, params: Scalars, inputs: Scalars) -> Any:
        """Time derivative of the state, per day (equations in module doc)."""
        p = params
        normal, eff, mem, exh, tumour = y[0], y[1], y[2], y[3], y[4]
        total = normal + eff + mem + exh

        # growth laws: Kimmel homeostatic, antigen-driven (Singh/Hardiansyah)
        homeo = kimmel_growth_rate(total, p) * jnp.log(p["k_c"] / total)
        homeo_plus = 0.5 * (homeo + jnp.sqrt(homeo**2 + _SMOOTH_RATE**2))
        stim = tumour / (tumour + p["k_stim"])
        steroid = 1.0 / (1.0 + inputs["steroid_exposure"] / p["steroid_ic50"])
        antigen = p["k_exp"] * stim * steroid

        # infusion splits into effector and memory by product composition
        infused = inputs["cart_infusion_rate"] / CELLS_PER_UL_EQUIVALENT
        f_mem = inputs["product_memory_fraction"]

        # phenotype transitions (CARTmath) and exhaustion (assumption 2)
        to_memory = p["k_em"] * eff
        to_effector = p["k_me"] * stim * mem
        to_exhausted = p["k_ex"] * stim * eff
        kill = p["gamma_b"] * eff / (p["k_b"] + eff) * tumour

        d_normal = p["r_n"] * normal * jnp.log(p["k_n"] / total) - (
            p["k_ld"] * inputs["ld_exposure"] * normal
        )
        d_eff = (
            (1.0 - f_mem) * infused
            + (antigen + homeo - p["d_e"]) * eff
            - to_memory
            - to_exhausted
            + to_effector
        )
        d_mem = (
            f_mem * infused + (homeo_plus - p["d_m"]) * mem + to_memory - to_effector
        )
        d_exh = to_exhausted - p["d_x"] * exh
        d_tumour = (
            p["r_b"] * tumour * (1.0 - tumour / p["b_max"])
            - kill
            - p["k_br"] * inputs["bridging_exposure"] * tumour
        )
        rates = [d_normal, d_eff, d_mem, d_exh, d_tumour]
        if self.disease == "MM":
            rates.append(p["k_mprot"] * (p["m_per_tumour"] * tumour - y[5]))
        return jnp.stack(rates)

    def couplings(self, t: Any, y: Any, params: Scalars) -> dict[str, Any]:
        """CAR T total, tumour burden, killing rate and normal T cells."""
        eff, tumour = y[1], y[4]
        kill = params["gamma_b"] * eff / (params["k_b"] + eff) * tumour
        return {
            "cart_total": y[1] + y[2] + y[3],
            "tumour_burden": tumour,
            "tumour_kill_rate": kill,
            "normal_t_cells": y[0],
        }

    def observe(self, quantity: str, t: Any, y: Any, params: Scalars) -> Any:
        """Prediction of ``quantity`` in its canonical unit."""
        cart = y[1] + y[2] + y[3]
        tumour = jnp.maximum(y[4], 0.0)
        table = {
            "cart_flow": lambda: cart,
            "cart_qpcr": lambda: params["qpcr_per_cell"] * cart,
            "alc": lambda: (y[0] + cart) / (1000.0 * params["t_fraction"]),
            "ldh": lambda: params["ldh_base"] + params["ldh_per_tumour"] * tumour,
            "spd": lambda: params["spd_coef"] * tumour ** (2.0 / 3.0),
            "m_protein": lambda: y[5] if self.disease == "MM" else None,
            "involved_flc": lambda: (
                params["flc_base"] + params["flc_per_tumour"] * tumour
            ),
        }
        known = {o.quantity for o in self.observables}
        if quantity not in known:
            raise ModelSpecificationError(
                f"model {self.name} ({self.disease}) cannot observe {quantity!r}; "
                f"it explains {sorted(known)}"
            )
        return table[quantity]()

    def forecast_summaries(
        self, t_days: np.ndarray, draws: Mapping[str, np.ndarray], origin_day: float
    ) -> dict[str, Any]:
        """Response probabilities (days 28/90/180) and the CAR T peak.

        The peak (``cmax`` in cells/µL, ``tmax`` in days) is taken per draw
        over days >= 0 of ``cart_flow`` and summarised by its median and 90%
        interval.
        """
        t = np.asarray(t_days, dtype=float)
        after = t >= 0.0
        flow = np.asarray(draws["cart_flow"])[:, after]
        peaks = np.nanmax(flow, axis=1)
        days = t[after][np.nanargmax(np.nan_to_num(flow, nan=-1.0), axis=1)]
        return {
            "response": response_summary(t, draws, self.disease),
            "cart_peak": {
                "cmax": _quantiles(peaks, "/uL"),
                "tmax": _quantiles(days, "d"),
            },
        }

    # -- SBML export (cartwin.graph.sbml_export) ---------------------------
    def sbml_rates(self) -> dict[str, str]:
        """Each state's derivative as an SBML L3 infix formula, per day.

        The same equations and assumptions as :meth:`rhs`, written for
        ``libsbml.parseL3Formula`` in terms of this model's parameter and
        state names and the input names of :attr:`inputs` (the exporter
        qualifies parameter and state names). ``ln`` is the natural
        logarithm (``log`` would be read as log10).
        ``tests/graph/test_sbml_export.py`` checks the formulas against
        :meth:`rhs` at random states.
        """
        total = "(normal_t + effector + memory + exhausted)"
        gap = f"({total} - k_n)^2"
        growth = f"(rho_c + b_reconst * {gap} / (a_signal * {total}^2 + {gap}))"
        homeo = f"({growth} * ln(k_c / {total}))"
        smooth = repr(_SMOOTH_RATE)
        homeo_plus = f"(0.5 * ({homeo} + sqrt({homeo}^2 + {smooth}^2)))"
        stim = "(tumour / (tumour + k_stim))"
        steroid = "(1 / (1 + steroid_exposure / steroid_ic50))"
        antigen = f"(k_exp * {stim} * {steroid})"
        infused = f"(cart_infusion_rate / {CELLS_PER_UL_EQUIVALENT!r})"
        f_mem = "product_memory_fraction"
        to_memory = "(k_em * effector)"
        to_effector = f"(k_me * {stim} * memory)"
        to_exhausted = f"(k_ex * {stim} * effector)"
        kill = "(gamma_b * effector / (k_b + effector) * tumour)"
        rates = {
            "normal_t": f"r_n * normal_t * ln(k_n / {total})"
            " - k_ld * ld_exposure * normal_t",
            "effector": f"(1 - {f_mem}) * {infused}"
            f" + ({antigen} + {homeo} - d_e) * effector"
            f" - {to_memory} - {to_exhausted} + {to_effector}",
            "memory": f"{f_mem} * {infused} + ({homeo_plus} - d_m) * memory"
            f" + {to_memory} - {to_effector}",
            "exhausted": f"{to_exhausted} - d_x * exhausted",
            "tumour": f"r_b * tumour * (1 - tumour / b_max) - {kill}"
            " - k_br * bridging_exposure * tumour",
        }
        if self.disease == "MM":
            rates["m_protein"] = "k_mprot * (m_per_tumour * tumour - m_protein)"
        return rates

    def sbml_couplings(self) -> dict[str, str]:
        """The outputs of :meth:`couplings` as SBML L3 infix formulas."""
        return {
            "cart_total": "effector + memory + exhausted",
            "tumour_burden": "tumour",
            "tumour_kill_rate": "gamma_b * effector / (k_b + effector) * tumour",
            "normal_t_cells": "normal_t",
        }

    def sbml_initial_state(self) -> dict[str, str]:
        """:meth:`initial_state` as SBML L3 infix formulas of the parameters."""
        values = {
            "normal_t": "n_t0",
            "effector": "0",
            "memory": "0",
            "exhausted": "0",
            "tumour": "tumour0",
        }
        if self.disease == "MM":
            values["m_protein"] = "m_per_tumour * tumour0"
        return values


def _quantiles(values: np.ndarray, unit: str) -> dict[str, Any]:
    low, mid, high = np.nanquantile(values, [0.05, 0.5, 0.95])
    return {
        "median": float(mid),
        "lower": float(low),
        "upper": float(high),
        "unit": unit,
    }


# -- validation ---------------------------------------------------------------

#: CARTmath default parameter sets (clinical-facts §5.5, app defaults).
CARTMATH_SETS = {
    "HDLM-2": {
        "phi": 0.265,
        "rho": 0.35,
        "alpha": 4.5e-8,
        "epsilon": 0.15,
        "mu": 5.0e-3,
        "theta": 6.0e-6,
        "r": 5.650026e-2,
        "gamma": 3.715843e-6,
        "b": 1.404029e-12,
    },
    "RAJI": {
        "phi": 0.83,
        "rho": 0.8300536,
        "alpha": 1.248506e-8,
        "epsilon": 1.59795,
        "mu": 6.89e-7,
        "theta": 2.3e-4,
        "r": 5.071721e-1,
        "gamma": 3.365388e-8,
        "b": 0.0,
    },
}

_NO_INPUTS = {
    "cart_infusion_rate": 0.0,
    "ld_exposure": 0.0,
    "bridging_exposure": 0.0,
    "steroid_exposure": 0.0,
    "product_memory_fraction": 0.0,
}

#: Saturation constants large enough that ``x / (x + K)`` is ``x / K``.
_LINEAR = 1e18


def reduced_parameters(kind: str, values: Mapping[str, float]) -> dict[str, float]:
    """Parameters under which :class:`CarTumourModel` reduces to a source model.

    ``kind="kimmel"`` with Kimmel 2021's values (no antigen-driven expansion,
    no phenotype transitions, exponential tumour growth); ``kind="cartmath"``
    with a CARTmath set (constant net effector growth ``phi - rho``, memory
    made at ``epsilon`` without effector loss, mass-action antigen terms and
    killing obtained with saturation constants of 1e18). Normal T cells stay
    at 1 and Kimmel's homeostatic term is 0 in the CARTmath case; the memory
    death rate absorbs the smooth positive part's floor ``eps / 2``.
    """
    base = {p.name: p.median for p in COMMON_PARAMETERS + LBCL_PARAMETERS}
    if kind == "kimmel":
        base.update(
            {
                k: values[k]
                for k in ("k_n", "k_c", "r_n", "rho_c", "gamma_b", "k_b", "r_b")
            }
        )
        base.update(
            a_signal=values["a"],
            b_reconst=values["b"],
            k_exp=0.0,
            k_em=0.0,
            k_me=0.0,
            k_ex=0.0,
            d_e=0.0,
            d_m=0.0,
            b_max=1e300,
            k_ld=0.0,
        )
        return base
    if kind != "cartmath":
        raise ModelSpecificationError(f"unknown reduction {kind!r}")
    v = values
    base.update(
        r_n=0.0,
        k_ld=0.0,
        rho_c=0.0,
        b_reconst=0.0,
        k_exp=0.0,
        d_e=v["rho"] - v["phi"] - v["epsilon"],
        k_em=v["epsilon"],
        k_stim=_LINEAR,
        k_me=v["theta"] * _LINEAR,
        k_ex=v["alpha"] * _LINEAR,
        d_m=v["mu"] + 0.5 * _SMOOTH_RATE,
        k_b=_LINEAR,
        gamma_b=v["gamma"] * _LINEAR,
        r_b=v["r"],
        b_max=1.0 / v["b"] if v["b"] > 0 else 1e300,
    )
    return base


def _kimmel_reference(t, y, p):
    # Kimmel 2021 equations as published (clinical-facts §5.2)
    n, c, b = y
    total = n + c
    rate = kimmel_growth_rate(
        total,
        {"rho_c": p["rho_c"], "b_reconst": p["b"], "a_signal": p["a"], "k_n": p["k_n"]},
    )
    return [
        p["r_n"] * n * np.log(p["k_n"] / total),
        rate * c * np.log(p["k_c"] / total),
        p["r_b"] * b - p["gamma_b"] * b * c / (p["k_b"] + c),
    ]


def _cartmath_reference(t, y, p):
    # CARTmath equations as published (clinical-facts §5.5, rk4.R)
    c_t, c_m, tumour = y
    return [
        (p["phi"] - p["rho"]) * c_t
        + p["theta"] * tumour * c_m
        - p["alpha"] * tumour * c_t,
        p["epsilon"] * c_t - p["theta"] * tumour * c_m - p["mu"] * c_m,
        p["r"] * tumour * (1 - p["b"] * tumour) - p["gamma"] * tumour * c_t,
    ]


def _solve(fun, y0, days):
    from scipy.integrate import solve_ivp

    solution = solve_ivp(
        fun, (0.0, days[-1]), y0, method="LSODA", t_eval=days, rtol=1e-11, atol=1e-14
    )
    return solution.y


def _model_solution(params: dict, y0: list[float], days: np.ndarray) -> np.ndarray:
    import jax

    model = CarTumourModel("LBCL")
    rhs = jax.jit(lambda t, y: model.rhs(t, y, params, _NO_INPUTS))
    return _solve(lambda t, y: np.asarray(rhs(t, jnp.asarray(y))), y0, days)


def validation_checks() -> list:
    """Checks of the CAR T / tumour model against its sources (see tests)."""
    from cartwin.graph.validation import ValidationCheck

    checks = []
    k = KIMMEL_2021
    params = {
        "rho_c": k["rho_c"],
        "b_reconst": k["b"],
        "a_signal": k["a"],
        "k_n": k["k_n"],
    }
    for total, expected, tol in ((6.36, 0.550, 5e-4), (k["k_n"], k["rho_c"], 1e-9)):
        checks.append(
            ValidationCheck(
                f"Kimmel r_C(T = {total:g} /uL)",
                "cart_tumour",
                "Kimmel 2021 (doi:10.1098/rspb.2021.0229) via clinical-facts §5.2",
                expected,
                float(kimmel_growth_rate(total, params)),
                tol,
                "/d",
                note="tolerance: half a unit of the last printed digit",
            )
        )
    checks += _kimmel_reduction_checks()
    for name in CARTMATH_SETS:
        checks += _cartmath_checks(name)
    return checks


def _kimmel_reduction_checks() -> list:
    from cartwin.graph.validation import ValidationCheck

    k, days = KIMMEL_2021, np.array([0.0, 10.0, 30.0, 100.0])
    reference = _solve(
        lambda t, y: _kimmel_reference(t, y, k), [k["n0"], k["c0"], k["b0"]], days
    )
    params = reduced_parameters("kimmel", k)
    ours = _model_solution(params, [k["n0"], k["c0"], 0.0, 0.0, k["b0"]], days)
    checks = []
    for index, (label, row) in enumerate((("CAR T C", 1), ("tumour B", 4))):
        for j, day in enumerate(days[1:], start=1):
            checks.append(
                ValidationCheck(
                    f"Kimmel special case: {label} at day {day:g}",
                    "cart_tumour",
                    "Kimmel 2021 equations and BIOMD0000001041 values, integrated "
                    "independently (scipy LSODA)",
                    float(reference[1 + index, j]),
                    float(ours[row, j]),
                    1e-6,
                    "/uL" if row == 1 else "10*9.{cells}",
                    relative=True,
                    kind="verification",
                    note="model with antigen-driven terms off equals Kimmel's system",
                )
            )
    return checks


def _cartmath_checks(name: str) -> list:
    from cartwin.graph.validation import ValidationCheck

    values = CARTMATH_SETS[name]
    days = np.linspace(0.0, 60.0, 241)
    start = {"HDLM-2": (2.0e6, 1.0e6), "RAJI": (1.0e7, 1.0e8)}[name]
    reference = _solve(
        lambda t, y: _cartmath_reference(t, y, values), [start[0], 0.0, start[1]], days
    )
    ours = _model_solution(
        reduced_parameters("cartmath", values),
        [1.0, start[0], 0.0, 0.0, start[1]],
        days,
    )
    fate = [
        "eliminated" if row[-1] < 1.0 else "not eliminated"
        for row in (reference[2], ours[4])
    ]
    checks = []
    for label, ref_row, row in (("effector", 0, 1), ("memory", 1, 2), ("tumour", 2, 4)):
        checks.append(
            ValidationCheck(
                f"CARTmath {name} special case: {label} AUC, days 0-60",
                "cart_tumour",
                "CARTmath (doi:10.3390/cancers13122941) default set, equations of "
                "clinical-facts §5.5 integrated independently (scipy LSODA)",
                float(np.trapezoid(reference[ref_row], days)),
                float(np.trapezoid(ours[row], days)),
                1e-6,
                "cells x d",
                relative=True,
                kind="verification",
                note=f"start {start[0]:.3g} CAR T and {start[1]:.3g} tumour cells "
                f"(chosen); tumour by day 60: reference {fate[0]}, model {fate[1]}",
            )
        )
    return checks
