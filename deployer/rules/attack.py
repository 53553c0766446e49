"""A small, hand-written MITRE ATT&CK (Enterprise) table: tactics and the techniques rules use.

The tactic list is complete, so an unknown tactic ID is an error. The technique list only holds
techniques this repository's rules map to (plus their close neighbours); a technique missing
from it is a warning ("cannot verify its tactic"), not an error, so mapping a new technique
never blocks a merge: add it here, with its tactic(s), in the same change.
"""

from __future__ import annotations

import re

ATTACK_ID = re.compile(r"^(?:TA\d{4}|T\d{4}(?:\.\d{3})?)$")

TACTICS: dict[str, str] = {
    "TA0043": "Reconnaissance",
    "TA0042": "Resource Development",
    "TA0001": "Initial Access",
    "TA0002": "Execution",
    "TA0003": "Persistence",
    "TA0004": "Privilege Escalation",
    "TA0005": "Defense Evasion",
    "TA0006": "Credential Access",
    "TA0007": "Discovery",
    "TA0008": "Lateral Movement",
    "TA0009": "Collection",
    "TA0011": "Command and Control",
    "TA0010": "Exfiltration",
    "TA0040": "Impact",
}

# technique or sub-technique ID → (name, tactic IDs it belongs to)
TECHNIQUES: dict[str, tuple[str, tuple[str, ...]]] = {
    "T1204": ("User Execution", ("TA0002",)),
    "T1204.001": ("Malicious Link", ("TA0002",)),
    "T1204.002": ("Malicious File", ("TA0002",)),
    "T1566": ("Phishing", ("TA0001",)),
    "T1566.001": ("Spearphishing Attachment", ("TA0001",)),
    "T1566.002": ("Spearphishing Link", ("TA0001",)),
    "T1059": ("Command and Scripting Interpreter", ("TA0002",)),
    "T1059.001": ("PowerShell", ("TA0002",)),
    "T1059.002": ("AppleScript", ("TA0002",)),
    "T1059.003": ("Windows Command Shell", ("TA0002",)),
    "T1059.004": ("Unix Shell", ("TA0002",)),
    "T1059.005": ("Visual Basic", ("TA0002",)),
    "T1059.006": ("Python", ("TA0002",)),
    "T1059.007": ("JavaScript", ("TA0002",)),
    "T1218": ("System Binary Proxy Execution", ("TA0005",)),
    "T1218.005": ("Mshta", ("TA0005",)),
    "T1218.007": ("Msiexec", ("TA0005",)),
    "T1218.010": ("Regsvr32", ("TA0005",)),
    "T1218.011": ("Rundll32", ("TA0005",)),
    "T1553": ("Subvert Trust Controls", ("TA0005",)),
    "T1553.005": ("Mark-of-the-Web Bypass", ("TA0005",)),
    "T1027": ("Obfuscated Files or Information", ("TA0005",)),
    "T1140": ("Deobfuscate/Decode Files or Information", ("TA0005",)),
    "T1036": ("Masquerading", ("TA0005",)),
    "T1105": ("Ingress Tool Transfer", ("TA0011",)),
    "T1071": ("Application Layer Protocol", ("TA0011",)),
    "T1071.001": ("Web Protocols", ("TA0011",)),
    "T1071.004": ("DNS", ("TA0011",)),
    "T1021": ("Remote Services", ("TA0008",)),
    "T1021.002": ("SMB/Windows Admin Shares", ("TA0008",)),
}


def tactic_reference(tactic_id: str) -> str:
    """The canonical attack.mitre.org URL of a tactic."""
    return f"https://attack.mitre.org/tactics/{tactic_id}/"


def technique_reference(technique_id: str) -> str:
    """The canonical attack.mitre.org URL of a technique or sub-technique."""
    return f"https://attack.mitre.org/techniques/{technique_id.replace('.', '/')}/"
