"""Totals of a schemathesis run from its NDJSON event report (scripts/schemathesis.sh).

Prints operations tested, test cases, checks run and failed (per check), and the statuses the
server answered, in all and per operation; exits 1 if any check failed, any answer was a 5xx or the run did not finish.
"""

import collections
import json
import sys


def main(path: str) -> int:
    operations = set()
    cases = 0
    checks = collections.Counter()
    failed = collections.Counter()
    failures = []
    statuses = collections.Counter()
    by_operation = collections.defaultdict(collections.Counter)
    finished = False
    with open(path, encoding="utf-8") as report:
        for line in report:
            event = json.loads(line)
            kind, payload = next(iter(event.items()))
            if kind == "EngineFinished":
                finished = True
            if kind != "ScenarioFinished":
                continue
            recorder = payload.get("recorder") or {}
            if recorder.get("label") != "Stateful tests":
                operations.add(recorder.get("label"))
            cases += len(recorder.get("cases") or {})
            for case_id, results in (recorder.get("checks") or {}).items():
                for result in results:
                    checks[result["name"]] += 1
                    if result["status"] != "success":
                        failed[result["name"]] += 1
                        failures.append(f"{recorder.get('label')} [{case_id}]: {result['name']}")
            cases_by_id = recorder.get("cases") or {}
            for case_id, interaction in (recorder.get("interactions") or {}).items():
                response = interaction.get("response") or {}
                if "status_code" in response:
                    statuses[response["status_code"]] += 1
                    case = (cases_by_id.get(case_id) or {}).get("value") or {}
                    operation = f"{case.get('method', '?').upper()} {case.get('path', '?')}"
                    by_operation[operation][response["status_code"]] += 1
    server_errors = sum(n for status, n in statuses.items() if status >= 500)
    print("== schemathesis totals")
    print(f"operations tested:  {len(operations)}")
    print(f"test cases:         {cases}")
    print(f"checks run:         {sum(checks.values())}")
    print(f"checks failed:      {sum(failed.values())}")
    for name in sorted(checks):
        print(f"  {name:30} {checks[name]:7} run {failed[name]:5} failed")
    print("responses by status: " + ", ".join(f"{s}: {n}" for s, n in sorted(statuses.items())))
    print("responses by operation:")
    for operation, counts in sorted(by_operation.items()):
        print(f"  {operation:45} " + " ".join(f"{s}:{n}" for s, n in sorted(counts.items())))
    for failure in sorted(set(failures))[:50]:
        print(f"  FAILED {failure}")
    if not finished:
        print("the run did not finish")
    ok = finished and not failed and server_errors == 0 and cases > 0
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
