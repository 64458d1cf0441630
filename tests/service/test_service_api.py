"""Endpoints through the in-process client: import, patients, twins, scores, errors."""

from __future__ import annotations

import pytest
from service_samples import auth, bundle, pseudonym, vital

FHIR = {"Content-Type": "application/fhir+json"}


def _post_fhir(client, token, body: bytes):
    return client.post(
        "/v1/imports/fhir", content=body, headers={**auth(token), **FHIR}
    )


def test_health_needs_no_token(client):
    response = client.get("/v1/health")
    assert response.status_code == 200 and response.json()["status"] == "ok"


def test_import_stores_once_and_names_pseudonyms_only(client, tokens):
    body = bundle("P-A", vitals=(("8310-5", 101.3, "[degF]", 20),))
    first = _post_fhir(client, tokens["write"], body)
    assert first.status_code == 201
    data = first.json()
    assert data["patients"] == [pseudonym("P-A")]
    assert data["summary"]["n_observations"] == 1 and data["summary"]["n_events"] == 1
    assert "P-A" not in first.text and "Testperson" not in first.text
    again = _post_fhir(client, tokens["write"], body).json()
    assert again["summary"]["already_imported"] is True


def test_import_single_observation(client, tokens, patients):
    observation = (
        b'{"resourceType": "Observation", "id": "t1", "status": "final",'
        b' "subject": {"reference": "Patient/P-A"},'
        b' "code": {"coding": [{"system": "http://loinc.org", "code": "8310-5"}]},'
        b' "effectiveDateTime": "2025-05-13T09:00:00+01:00",'
        b' "valueQuantity": {"value": 38.4, "unit": "Cel",'
        b' "system": "http://unitsofmeasure.org", "code": "Cel"}}'
    )
    response = _post_fhir(client, tokens["write"], observation)
    assert response.status_code == 201
    crs = client.get(
        f"/v1/patients/{patients['A']}/crs", headers=auth(tokens["read"])
    ).json()
    assert crs["current_grade"] == 1  # fever >= 38 °C after infusion: ASTCT grade 1


@pytest.mark.parametrize(
    ("body", "code"),
    [(b'{"resourceType": "Bundle", entry: [}', "malformed-json"),
     (b'{"resourceType": "Bundle", ', "truncated"),
     (b'{"resourceType": "Nonsense"}', "unknown-resource-type")],
)  # fmt: skip
def test_malformed_json_or_fhir_is_422_naming_the_problem(client, tokens, body, code):
    response = _post_fhir(client, tokens["write"], body)
    assert response.status_code == 422
    assert response.json()["error"]["code"] == code
    assert response.json()["problems"]


def test_invalid_fhir_names_field_and_value(client, tokens):
    body = bundle("P-A", vitals=(("8310-5", 38.5, "furlong", 5),))
    response = _post_fhir(client, tokens["write"], body)
    assert response.status_code == 422
    problems = response.json()["problems"]
    unit = [p for p in problems if p["code"] == "unit"]
    assert (
        unit and "valueQuantity" in unit[0]["field"] and "furlong" in unit[0]["value"]
    )
    assert "P-A-v0" not in response.text  # resource ids are hashed in answers


def test_patient_detail_and_unknown_patient(client, tokens, patients):
    detail = client.get(f"/v1/patients/{patients['A']}", headers=auth(tokens["read"]))
    assert detail.json()["n_events"] == 1 and detail.json()["disease"] is None
    missing = client.get("/v1/patients/0123456789abcdef", headers=auth(tokens["read"]))
    assert missing.status_code == 404
    assert missing.json()["error"]["field"] == "path.pseudonym"


def test_raw_id_in_url_is_refused_and_not_echoed(client, tokens, patients):
    response = client.get("/v1/patients/P-A/crs", headers=auth(tokens["read"]))
    assert response.status_code == 422
    assert response.json()["error"]["field"] == "path.pseudonym"
    assert "P-A" not in response.text


@pytest.mark.parametrize(
    ("body", "field", "fragment"),
    [
        ({"quantity": "temperature", "value": 38, "time": "2025-05-13T10:00:00"},
         "body.VitalIn.time", "timezone"),
        ({"quantity": "glucose", "value": 5, "time": "2025-05-13T10:00:00Z"},
         "body.VitalIn.quantity", "temperature"),
        ({"quantity": "temperature", "value": "NaN", "time": "2025-05-13T10:00:00Z"},
         "body.VitalIn.value", "finite"),
    ],
)  # fmt: skip
def test_invalid_vital_names_field(client, tokens, patients, body, field, fragment):
    url = f"/v1/patients/{patients['A']}/vitals"
    response = client.post(url, json=body, headers=auth(tokens["write"]))
    assert response.status_code == 422
    fields = {p["field"]: p["message"] for p in response.json()["problems"]}
    assert field in fields and fragment in fields[field].lower()


def test_unconvertible_unit_is_422_naming_unit(client, tokens, patients):
    url = f"/v1/patients/{patients['A']}/vitals"
    body = [vital("temperature", 37.0, 1), vital("systolic_bp", 80, 2, unit="kg")]
    response = client.post(url, json=body, headers=auth(tokens["write"]))
    assert response.status_code == 422
    error = response.json()["error"]
    assert (error["field"], error["value"]) == ("body[1].unit", "kg")
    crs = client.get(f"/v1/patients/{patients['A']}/crs", headers=auth(tokens["read"]))
    assert crs.json()["timeline"]["points"] == []  # nothing of the request stored


def test_vitals_convert_units_and_skip_duplicates(client, tokens, patients):
    url = f"/v1/patients/{patients['A']}/vitals"
    body = [
        vital("temperature", 100.4, 3, unit="[degF]", source_id="obs-1"),
        vital("temperature", 100.4, 3, unit="[degF]", source_id="obs-1"),
    ]
    result = client.post(url, json=body, headers=auth(tokens["write"])).json()
    assert (result["received"], result["stored"], result["duplicates"]) == (2, 1, 1)
    # 100.4 °F = 38.0 °C exactly: a fever by the ASTCT threshold (T >= 38 °C).
    assert result["crs_grade"] == 1
    again = client.post(url, json=body[0], headers=auth(tokens["write"])).json()
    assert (again["stored"], again["duplicates"]) == (0, 1)


def test_vitals_for_unknown_patient_is_404(client, tokens, patients):
    url = "/v1/patients/0123456789abcdef/vitals"
    response = client.post(
        url, json=vital("spo2", 97, 1), headers=auth(tokens["write"])
    )
    assert response.status_code == 404


def test_scores_without_twin_come_from_the_record(client, tokens, patients):
    data = client.get(
        f"/v1/patients/{patients['A']}/scores", headers=auth(tokens["read"])
    )
    body = data.json()
    assert body["source"] == "record" and body["twin_version"] is None
    assert {s["name"] for s in body["scores"]} >= {"CAR-HEMATOTOX"}
    forecast = client.get(
        f"/v1/patients/{patients['A']}/forecasts", headers=auth(tokens["read"])
    )
    assert (
        forecast.status_code == 404
        and forecast.json()["error"]["code"] == "no-twin-version"
    )


def test_twin_version_build_list_forecast_and_audit(app, client, tokens, patients):
    url = f"/v1/patients/{patients['A']}/twin-versions"
    made = client.post(
        url, json={"seed": 7, "n_draws": 50}, headers=auth(tokens["write"])
    )
    assert made.status_code == 201
    version_id = made.json()["version_id"]
    assert made.json()["settings"]["seed"] == 7
    assert app.state.service.audit.entries()[-1].twin_version == version_id
    listed = client.get(url, headers=auth(tokens["read"])).json()
    assert [v["version_id"] for v in listed] == [version_id]
    full = client.get(f"{url}/{version_id}", headers=auth(tokens["read"])).json()
    assert set(full["outputs"]) >= {"kinetics", "scores", "crs", "icans", "journey"}
    forecast = client.get(
        f"/v1/patients/{patients['A']}/forecasts", headers=auth(tokens["read"])
    )
    kinetics = forecast.json()["kinetics"]
    assert forecast.json()["twin_version"] == version_id
    assert kinetics["interval"] == pytest.approx(0.9)
    assert (
        len(kinetics["lower"]) == len(kinetics["median"]) == len(kinetics["upper"]) > 0
    )
    scores = client.get(
        f"/v1/patients/{patients['A']}/scores", headers=auth(tokens["read"])
    )
    assert scores.json()["source"] == "twin_version"


def test_scenario_reruns_with_settings_without_saving(client, tokens, patients):
    url = f"/v1/patients/{patients['A']}/scenarios"
    body = {"seed": 11, "interval": 0.5, "n_draws": 50}
    response = client.post(url, json=body, headers=auth(tokens["read"]))
    assert response.status_code == 200
    version = response.json()["version"]
    assert response.json()["saved"] is False and version["settings"]["interval"] == 0.5
    listed = client.get(
        f"/v1/patients/{patients['A']}/twin-versions", headers=auth(tokens["read"])
    )
    assert listed.json() == []
    saving = client.post(url, json={**body, "save": True}, headers=auth(tokens["read"]))
    assert saving.status_code == 403  # saving a version needs write scope


def test_scenario_interventions_are_501_naming_the_model_graph(
    client, tokens, patients
):
    url = f"/v1/patients/{patients['A']}/scenarios"
    body = {"interventions": [{"kind": "tocilizumab", "day": 2}]}
    response = client.post(url, json=body, headers=auth(tokens["read"]))
    assert response.status_code == 501
    error = response.json()["error"]
    assert error["field"] == "body.interventions" and "model graph" in error["message"]


def test_unknown_route_is_json_404(client, tokens):
    response = client.get("/v1/nothing", headers=auth(tokens["read"]))
    assert (
        response.status_code == 404 and response.json()["error"]["code"] == "not-found"
    )
