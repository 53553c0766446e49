"""Generate a workday of benign endpoint telemetry (Elastic Defend shape) for noise estimates.

    python scripts/gen_background_telemetry.py --hosts 300 --out /tmp/background.ndjson.gz
    dac backtest --events /tmp/background.ndjson.gz

Hosts are 70% Windows, 15% macOS, 15% Linux office workstations. Each host does what office users
do, at rates per host-day chosen to be plausible rather than measured: opens documents and PDFs
(owner/lock files, Recent shortcuts), reads mail and saves attachments, downloads files (Mark of the
Web, origin URL), installs software from downloads and vendor disk images (signed by allow-listed
and other publishers), extracts archives, runs Office updaters, opens terminals, and, rarely, runs a
business macro that shells out or installs an .msi straight from the browser. No attack is in it:
every alert the rules raise on this file is noise. The figures are a model, not a fleet: measure on
your own telemetry before enabling a rule.
"""

from __future__ import annotations

import argparse
import gzip
import json
import random
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

START = datetime(2026, 11, 16, 8, 0, tzinfo=UTC)  # a Monday, 08:00
WORKDAY_S = 9 * 3600

# Per host-day probabilities (or mean counts) of each benign activity.
RATES = {
    "doc_open": 6.0,
    "pdf_open": 3.0,
    "attachment": 2.0,
    "download": 3.0,
    "installer_download_run": 0.15,
    "msi_open_from_browser": 0.02,
    "vendor_iso": 0.01,
    "archive_extract": 0.5,
    "office_updater": 0.3,
    "user_shell": 0.4,
    "business_macro_cmd": 0.005,
    "lnk_download": 0.002,
    "mac_dmg_install": 0.08,
    "linux_script_download": 0.1,
}
VENDORS_ALLOWED = ["Microsoft Corporation", "Adobe Inc.", "Zoom Video Communications, Inc."]
VENDORS_OTHER = ["Autodesk, Inc.", "Notepad++", "Mozilla Corporation", "Slack Technologies, LLC"]
MAC_TEAMS_ALLOWED = ["BJ4HAAB9B3", "UBF8T346G9"]
MAC_TEAMS_OTHER = ["43AQ936H96", "VEKTX9H2N7", "2BUA8C4S2C"]


class Host:
    """One workstation: identity and an event writer."""

    def __init__(self, index: int, os_type: str, rng: random.Random) -> None:
        self.index, self.os, self.rng = index, os_type, rng
        self.id = f"bg-{os_type}-{index:04d}"
        self.user = f"user{index:04d}"
        self.uid = {"windows": f"S-1-5-21-1004336348-1177238915-682003330-{1000 + index}"}.get(
            os_type, str(1000 + index)
        )
        self.events: list[tuple[float, dict[str, Any]]] = []
        self.counter = 0

    def _ev(
        self, t: float, category: str, etype: list[str], action: str, process: dict[str, Any]
    ) -> dict[str, Any]:
        self.counter += 1
        ev: dict[str, Any] = {
            "@timestamp": (START + timedelta(seconds=t)).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z",
            "event": {
                "id": f"{self.id}-{self.counter:05d}",
                "kind": "event",
                "category": [category],
                "type": etype,
                "action": action,
                "dataset": f"endpoint.events.{category}",
                "module": "endpoint",
            },
            "host": {"id": self.id, "name": self.id, "os": {"type": self.os, "family": self.os}},
            "user": {"name": self.user, "id": self.uid},
            "process": process,
        }
        self.events.append((t, ev))
        return ev

    def proc(self, name: str, exe: str, args: list[str] | None = None, **extra: Any) -> dict[str, Any]:
        self.counter += 1
        return {
            "entity_id": f"{self.id}-p{self.counter:05d}",
            "pid": self.rng.randint(500, 60000),
            "name": name,
            "executable": exe,
            "args": args or [exe],
            **extra,
        }

    def start(
        self, t: float, p: dict[str, Any], parent: dict[str, Any] | None, cwd: str | None = None
    ) -> None:
        proc = dict(p)
        proc["command_line"] = " ".join(proc["args"])
        if parent is not None:
            proc["parent"] = {k: parent[k] for k in ("entity_id", "pid", "name", "executable") if k in parent}
            if "code_signature" in parent:
                proc["parent"]["code_signature"] = parent["code_signature"]
        if cwd:
            proc["working_directory"] = cwd
        self._ev(t, "process", ["start"], "start", proc)

    @staticmethod
    def _short(p: dict[str, Any]) -> dict[str, Any]:
        return {k: p[k] for k in ("entity_id", "pid", "name", "executable")}

    def file(self, t: float, p: dict[str, Any], path: str, action: str = "creation", **fields: Any) -> None:
        sep = "\\" if self.os == "windows" else "/"
        name = path.rsplit(sep, 1)[-1]
        f: dict[str, Any] = {"path": path, "name": name, **fields}
        if "." in name:
            f["extension"] = name.rsplit(".", 1)[1]
        self._ev(t, "file", ["creation"] if action == "creation" else ["change"], action, self._short(p))[
            "file"
        ] = f

    def net(self, t: float, p: dict[str, Any], domain: str, ip: str, port: int = 443) -> None:
        ev = self._ev(t, "network", ["protocol", "info"], "lookup_requested", self._short(p))
        ev["dns"] = {"question": {"name": domain, "type": "A"}}
        ev = self._ev(t + 0.2, "network", ["start"], "connection_attempted", self._short(p))
        ev["destination"] = {"ip": ip, "port": port}
        ev["network"] = {"direction": "egress", "transport": "tcp"}


def _times(rng: random.Random, mean: float) -> list[float]:
    """Start times of an activity with ``mean`` occurrences per workday (Poisson-like)."""
    count = int(mean) + (1 if rng.random() < mean - int(mean) else 0)
    return sorted(rng.uniform(600, WORKDAY_S - 1800) for _ in range(count))


def windows_day(h: Host) -> None:
    rng = h.rng
    home = f"C:\\Users\\{h.user}"
    exp = h.proc("explorer.exe", "C:\\Windows\\explorer.exe")
    h.start(1, exp, None)
    outlook = h.proc("OUTLOOK.EXE", "C:\\Program Files\\Microsoft Office\\root\\Office16\\OUTLOOK.EXE")
    h.start(30, outlook, exp)
    chrome = h.proc("chrome.exe", "C:\\Program Files\\Google\\Chrome\\Application\\chrome.exe")
    h.start(60, chrome, exp)
    signed = {"exists": True, "trusted": True, "status": "trusted"}
    for t in _times(rng, RATES["doc_open"]):
        app, ext = rng.choice([("WINWORD.EXE", "docx"), ("EXCEL.EXE", "xlsx"), ("POWERPNT.EXE", "pptx")])
        doc = f"{home}\\{rng.choice(['Documents', 'Downloads', 'OneDrive - Corp'])}\\report_{rng.randint(1, 999)}.{ext}"
        p = h.proc(app, f"C:\\Program Files\\Microsoft Office\\root\\Office16\\{app}", [app, doc])
        h.start(t, p, exp)
        h.file(t + 2, p, doc.rsplit("\\", 1)[0] + "\\~$" + doc.rsplit("\\", 1)[1][2:])
        h.file(
            t + 3,
            exp,
            f"{home}\\AppData\\Roaming\\Microsoft\\Windows\\Recent\\{doc.rsplit(chr(92), 1)[1]}.lnk",
        )
        if rng.random() < 0.1:
            sp = h.proc("splwow64.exe", "C:\\Windows\\splwow64.exe", ["C:\\Windows\\splwow64.exe", "12288"])
            h.start(t + 120, sp, p)
    for t in _times(rng, RATES["pdf_open"]):
        pdf = f"{home}\\Downloads\\statement_{rng.randint(1, 999)}.pdf"
        p = h.proc(
            "AcroRd32.exe",
            "C:\\Program Files\\Adobe\\Acrobat DC\\Acrobat\\AcroRd32.exe",
            ["AcroRd32.exe", pdf],
        )
        h.start(t, p, exp)
    for t in _times(rng, RATES["attachment"]):
        ext = rng.choice(["pdf", "docx", "xlsx", "zip"])
        path = f"{home}\\AppData\\Local\\Microsoft\\Windows\\INetCache\\Content.Outlook\\AB12CD34\\invoice_{rng.randint(1, 999)}.{ext}"
        h.file(t, outlook, path, **{"Ext": {"windows": {"zone_identifier": "3"}}})
        if ext == "pdf":
            p = h.proc(
                "AcroRd32.exe",
                "C:\\Program Files\\Adobe\\Acrobat DC\\Acrobat\\AcroRd32.exe",
                ["AcroRd32.exe", path],
            )
            h.start(t + 2, p, outlook)
    for t in _times(rng, RATES["download"]):
        ext = rng.choice(["pdf", "zip", "docx", "png", "csv", "exe"])
        path = f"{home}\\Downloads\\file_{rng.randint(1, 9999)}.{ext}"
        h.file(
            t,
            chrome,
            path,
            action="rename",
            origin_url=f"https://www.example-vendor{rng.randint(1, 50)}.com/{ext}",
            Ext={"windows": {"zone_identifier": "3"}},
        )
        h.net(
            t - 5, chrome, f"www.example-vendor{rng.randint(1, 50)}.com", f"198.51.100.{rng.randint(1, 254)}"
        )
    for t in _times(rng, RATES["installer_download_run"]):
        vendor = rng.choice(VENDORS_ALLOWED + VENDORS_OTHER)
        path = f"{home}\\Downloads\\Setup_{rng.randint(1, 99)}.exe"
        h.file(
            t,
            chrome,
            path,
            action="rename",
            origin_url="https://downloads.example-vendor.com/setup.exe",
            Ext={"windows": {"zone_identifier": "3"}},
        )
        inst = h.proc("Setup.exe", path, code_signature={**signed, "subject_name": vendor})
        h.start(t + 20, inst, exp, cwd=f"{home}\\Downloads\\")
        h.net(t + 25, inst, "downloads.example-vendor.com", "198.51.100.77")
    for t in _times(rng, RATES["msi_open_from_browser"]):
        path = f"{home}\\Downloads\\ClientTool_{rng.randint(1, 99)}.msi"
        h.file(
            t,
            chrome,
            path,
            action="rename",
            origin_url="https://downloads.example-vendor.com/tool.msi",
            Ext={"windows": {"zone_identifier": "3"}},
        )
        msi = h.proc(
            "msiexec.exe",
            "C:\\Windows\\System32\\msiexec.exe",
            ["msiexec.exe", "/i", path],
            pe={"original_file_name": "msiexec.exe"},
        )
        h.start(t + 3, msi, chrome)
        h.net(t + 8, msi, "downloads.example-vendor.com", "198.51.100.77")
    for t in _times(rng, RATES["vendor_iso"]):
        path = f"{home}\\Downloads\\product_{rng.randint(1, 99)}.iso"
        h.file(
            t,
            chrome,
            path,
            action="rename",
            origin_url="https://downloads.example-vendor.com/product.iso",
            Ext={"windows": {"zone_identifier": "3"}},
        )
        vendor = rng.choice(VENDORS_ALLOWED + VENDORS_OTHER)
        setup = h.proc(
            "setup.exe",
            "E:\\setup.exe",
            code_signature={**signed, "subject_name": vendor},
            Ext={"device": {"product_id": "Virtual DVD-ROM", "bus_type": "FileBackedVirtual"}},
        )
        h.start(t + 60, setup, exp, cwd="E:\\")
    for t in _times(rng, RATES["archive_extract"]):
        arc = f"{home}\\Downloads\\bundle_{rng.randint(1, 99)}.zip"
        sz = h.proc("7zFM.exe", "C:\\Program Files\\7-Zip\\7zFM.exe", ["7zFM.exe", arc])
        h.start(t, sz, exp)
        for i in range(3):
            h.file(
                t + 2 + i,
                sz,
                f"{home}\\Downloads\\bundle\\file{i}.{rng.choice(['txt', 'pdf', 'exe', 'dll'])}",
            )
    for t in _times(rng, RATES["office_updater"]):
        p = h.proc("WINWORD.EXE", "C:\\Program Files\\Microsoft Office\\root\\Office16\\WINWORD.EXE")
        h.start(t, p, exp)
        upd = h.proc(
            "OfficeC2RClient.exe",
            "C:\\Program Files\\Common Files\\microsoft shared\\ClickToRun\\OfficeC2RClient.exe",
        )
        h.start(t + 30, upd, p)
        h.net(t + 31, upd, "officecdn.microsoft.com", "13.107.6.171")
    for t in _times(rng, RATES["user_shell"]):
        name = rng.choice(["cmd.exe", "powershell.exe"])
        exe = "C:\\Windows\\System32\\" + (
            name if name == "cmd.exe" else "WindowsPowerShell\\v1.0\\powershell.exe"
        )
        sh = h.proc(name, exe, [exe], pe={"original_file_name": name})
        h.start(t, sh, exp, cwd=home)
        if rng.random() < 0.3:
            h.net(t + 40, sh, "www.powershellgallery.com", "20.50.2.3")
    for t in _times(rng, RATES["business_macro_cmd"]):
        doc = f"{home}\\Documents\\FY_model.xlsm"
        xl = h.proc(
            "EXCEL.EXE", "C:\\Program Files\\Microsoft Office\\root\\Office16\\EXCEL.EXE", ["EXCEL.EXE", doc]
        )
        h.start(t, xl, exp)
        h.file(t + 5, xl, f"{home}\\AppData\\Local\\Temp\\refresh.cmd")
        cmd = h.proc(
            "cmd.exe",
            "C:\\Windows\\System32\\cmd.exe",
            ["cmd.exe", "/c", f"{home}\\AppData\\Local\\Temp\\refresh.cmd"],
            pe={"original_file_name": "Cmd.Exe"},
        )
        h.start(t + 6, cmd, xl)
    for t in _times(rng, RATES["lnk_download"]):
        h.file(
            t,
            chrome,
            f"{home}\\Downloads\\Intranet_Portal.lnk",
            action="rename",
            origin_url="https://intranet.corp.example.com/portal.lnk",
            Ext={"windows": {"zone_identifier": "3"}},
        )
        app = h.proc("msedge.exe", "C:\\Program Files (x86)\\Microsoft\\Edge\\Application\\msedge.exe")
        h.start(t + 30, app, exp)


def macos_day(h: Host) -> None:
    rng = h.rng
    home = f"/Users/{h.user}"
    launchd = h.proc("launchd", "/sbin/launchd")
    chrome = h.proc("Google Chrome", "/Applications/Google Chrome.app/Contents/MacOS/Google Chrome")
    h.start(60, chrome, launchd)
    for t in _times(rng, RATES["doc_open"]):
        word = h.proc("Microsoft Word", "/Applications/Microsoft Word.app/Contents/MacOS/Microsoft Word")
        h.start(t, word, launchd)
        h.file(t + 2, word, f"{home}/Documents/~$port_{rng.randint(1, 999)}.docx")
        if rng.random() < 0.05:
            mau = h.proc(
                "Microsoft AutoUpdate",
                "/Library/Application Support/Microsoft/MAU2.0/Microsoft AutoUpdate.app/Contents/MacOS/Microsoft AutoUpdate",
            )
            h.start(t + 20, mau, word)
    for t in _times(rng, RATES["download"]):
        h.file(
            t,
            chrome,
            f"{home}/Downloads/file_{rng.randint(1, 9999)}.{rng.choice(['pdf', 'zip', 'png', 'dmg'])}",
            action="rename",
            origin_url="https://www.example-vendor.com/f",
        )
    for t in _times(rng, RATES["mac_dmg_install"]):
        h.file(
            t,
            chrome,
            f"{home}/Downloads/Installer_{rng.randint(1, 99)}.dmg",
            action="rename",
            origin_url="https://downloads.example-vendor.com/app.dmg",
        )
        team = rng.choice(MAC_TEAMS_ALLOWED + MAC_TEAMS_OTHER)
        app = h.proc(
            "Installer",
            "/Volumes/Installer/Installer.app/Contents/MacOS/Installer",
            code_signature={"exists": True, "trusted": True, "team_id": team},
        )
        h.start(t + 90, app, launchd)
        if rng.random() < 0.5:
            sh = h.proc(
                "sh", "/bin/sh", ["/bin/sh", "-c", "ditto /Volumes/Installer/App.app /Applications/App.app"]
            )
            h.start(t + 100, sh, app)
    for t in _times(rng, RATES["user_shell"]):
        term = h.proc("Terminal", "/System/Applications/Utilities/Terminal.app/Contents/MacOS/Terminal")
        h.start(t, term, launchd)
        zsh = h.proc("zsh", "/bin/zsh", ["-zsh"])
        h.start(t + 1, zsh, term)
        curl = h.proc("curl", "/usr/bin/curl", ["curl", "-s", "https://api.example.com/health"])
        h.start(t + 30, curl, zsh)


def linux_day(h: Host) -> None:
    rng = h.rng
    home = f"/home/{h.user}"
    systemd = h.proc("systemd", "/usr/lib/systemd/systemd", ["/usr/lib/systemd/systemd", "--user"])
    ff = h.proc("firefox", "/usr/lib/firefox/firefox")
    h.start(60, ff, systemd)
    for t in _times(rng, RATES["doc_open"]):
        doc = f"{home}/Documents/notes_{rng.randint(1, 999)}.odt"
        lo = h.proc(
            "soffice.bin",
            "/usr/lib/libreoffice/program/soffice.bin",
            ["/usr/lib/libreoffice/program/soffice.bin", doc],
        )
        h.start(t, lo, systemd)
        h.file(t + 2, lo, f"{home}/Documents/.~lock.notes.odt#")
        if rng.random() < 0.05:
            sh = h.proc("sh", "/usr/bin/sh", ["/bin/sh", "-c", "xdg-open https://wiki.example.com"])
            h.start(t + 60, sh, lo)
    for t in _times(rng, RATES["download"]):
        h.file(
            t,
            ff,
            f"{home}/Downloads/file_{rng.randint(1, 9999)}.{rng.choice(['pdf', 'tar.gz', 'deb', 'png'])}",
        )
    for t in _times(rng, RATES["linux_script_download"]):
        h.file(t, ff, f"{home}/Downloads/install.sh")
        term = h.proc("gnome-terminal-server", "/usr/libexec/gnome-terminal-server")
        h.start(t + 20, term, systemd)
        bash = h.proc("bash", "/usr/bin/bash", ["bash"])
        h.start(t + 21, bash, term)
        run = h.proc("bash", "/usr/bin/bash", ["bash", f"{home}/Downloads/install.sh"])
        h.start(t + 40, run, bash)


def generate(hosts: int, seed: int) -> Iterator[dict[str, Any]]:
    """Every host's workday, merged in time order."""
    rng = random.Random(seed)
    events: list[tuple[float, str, dict[str, Any]]] = []
    for i in range(hosts):
        roll = rng.random()
        os_type = "windows" if roll < 0.7 else "macos" if roll < 0.85 else "linux"
        host = Host(i, os_type, random.Random(rng.getrandbits(64)))
        {"windows": windows_day, "macos": macos_day, "linux": linux_day}[os_type](host)
        events.extend((t, ev["event"]["id"], ev) for t, ev in host.events)
    events.sort(key=lambda item: (item[0], item[1]))
    for _t, _id, ev in events:
        yield ev


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--hosts", type=int, default=300)
    ap.add_argument("--seed", type=int, default=13)
    ap.add_argument("--out", type=Path, required=True, help="ndjson file (.gz: gzip)")
    args = ap.parse_args()
    opener = gzip.open if args.out.suffix == ".gz" else open
    count = 0
    with opener(args.out, "wt", encoding="utf-8") as fh:
        for ev in generate(args.hosts, args.seed):
            fh.write(json.dumps(ev, separators=(",", ":")) + "\n")
            count += 1
    print(f"wrote {count} events for {args.hosts} host-days to {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
