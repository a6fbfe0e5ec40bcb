"""Invented name lists for the synthetic demo municipality: people, streets, zones, visit kinds.

Everything here is made up for the demo. First and family names are common-sounding Norwegian
names drawn at random, so a combination never describes a real person; the municipality,
districts and streets are fictional ("Demokommune").
"""

from __future__ import annotations

MUNICIPALITY = "Demokommune"

GIVEN_FEMALE = (
    "Astrid",
    "Bjørg",
    "Dagny",
    "Edel",
    "Eldbjørg",
    "Gerd",
    "Gunvor",
    "Hjørdis",
    "Ingrid",
    "Jorunn",
    "Kari",
    "Liv",
    "Magnhild",
    "Marit",
    "Oddny",
    "Randi",
    "Ragnhild",
    "Sigrid",
    "Solveig",
    "Turid",
    "Unni",
    "Vigdis",
    "Åse",
    "Borghild",
    "Inger",
    "Margit",
    "Torill",
)
GIVEN_MALE = (
    "Arne",
    "Bjarne",
    "Einar",
    "Finn",
    "Gunnar",
    "Halvor",
    "Harald",
    "Ivar",
    "Jens",
    "Kjell",
    "Leif",
    "Magnar",
    "Nils",
    "Odd",
    "Olav",
    "Per",
    "Reidar",
    "Rolf",
    "Sverre",
    "Terje",
    "Torbjørn",
    "Trygve",
    "Asbjørn",
    "Egil",
    "Helge",
    "Knut",
    "Oddvar",
)
# Staff are of working age: a younger set of first names.
GIVEN_STAFF = (
    "Amalie",
    "Ida",
    "Emma",
    "Nora",
    "Sara",
    "Thea",
    "Julie",
    "Maja",
    "Hanne",
    "Silje",
    "Camilla",
    "Kristine",
    "Marte",
    "Aisha",
    "Fatima",
    "Agnieszka",
    "Jonas",
    "Henrik",
    "Martin",
    "Sindre",
    "Eirik",
    "Mathias",
    "Ola",
    "Ahmed",
    "Tomasz",
    "Kristoffer",
    "Linh",
    "Mari",
)
FAMILY = (
    "Bakkeli",
    "Berglund",
    "Bjørkhaug",
    "Dalsrud",
    "Eikenes",
    "Fjellheim",
    "Furuseth",
    "Granly",
    "Haugland",
    "Holtet",
    "Kvernmo",
    "Lien",
    "Lyngstad",
    "Moen",
    "Myrvold",
    "Nordby",
    "Nyhus",
    "Rognli",
    "Sandvik",
    "Skogheim",
    "Solbakk",
    "Strand",
    "Sundli",
    "Tangen",
    "Teigen",
    "Vestby",
    "Vikan",
    "Åsheim",
    "Ødegård",
    "Brekke",
    "Engen",
    "Hovde",
    "Kleiven",
    "Lunde",
)
STREET_STEMS = (
    "Bjørke",
    "Einer",
    "Furu",
    "Kløver",
    "Lyng",
    "Mose",
    "Rogn",
    "Selje",
    "Hegg",
    "Multe",
    "Blåbær",
    "Tyttebær",
    "Bekke",
    "Fjord",
    "Hauge",
    "Kvern",
    "Myr",
    "Sol",
    "Tun",
    "Vard",
)
STREET_SUFFIXES = ("veien", "stien", "svingen", "bakken", "lia", "gata", "tunet", "åsen")

DISTRICTS = ("Elvebyen", "Åsmarka", "Sjøsiden", "Nordre", "Søndre", "Vestre", "Østre")
ZONE_NAMES = ("Nord", "Sør", "Øst", "Vest", "Sentrum", "Elvekanten", "Høyden", "Dalen")
SUBZONE_NAMES = (
    "Bakken",
    "Brua",
    "Enga",
    "Haugen",
    "Holtet",
    "Jordet",
    "Kroken",
    "Lia",
    "Moen",
    "Myra",
    "Neset",
    "Odden",
    "Sletta",
    "Toppen",
    "Tunet",
    "Vika",
    "Åsen",
    "Øya",
)

# Relatives: the text the care record shows, next to the v2-0131 code.
RELATIONSHIP_TEXTS = ("datter", "sønn", "ektefelle", "barnebarn", "nevø", "niese", "nabo")

# Visit descriptions by staff group and part of the day, with typical minutes on site.
NURSING_VISITS = {
    "day_a": (
        ("Morgenstell", 40),
        ("Morgenstell og medisiner", 45),
        ("Medisinering", 15),
        ("Insulin", 10),
    ),
    "day_b": (("Medisinering", 15), ("Tilsyn", 20), ("Sårstell", 30), ("Øyedråper", 10)),
    "eve_a": (("Tilsyn", 20), ("Medisinering", 15), ("Middag og tilsyn", 30)),
    "eve_b": (("Kveldsstell", 35), ("Kveldsmedisiner", 15), ("Tilsyn", 20)),
    "night": (("Nattilsyn", 25), ("Snuing og tilsyn", 30)),
}
HOME_HELP_VISITS = {
    "day_a": (("Praktisk bistand", 45), ("Frokost", 25), ("Morgenstell", 40)),
    "day_b": (("Rengjøring", 60), ("Handlehjelp", 45), ("Matombringing", 15)),
    "eve_a": (("Middag", 30), ("Praktisk bistand", 40)),
    "eve_b": (("Kveldsstell", 35), ("Tilsyn", 20)),
    "night": (("Nattilsyn", 25),),
}

QUALIFICATION_NURSING = ("Sykepleier", "Helsefagarbeider", "Vernepleier")
QUALIFICATION_HOME_HELP = ("Hjemmehjelp", "Assistent")

ELOCK_SYSTEM = "Portner simulert lås"
LOCK_MODEL_FLAT = "Portner SimLock F1 (leilighetsdør)"
LOCK_MODEL_STAIRWELL = "Portner SimLock T1 (trappeoppgang)"
LOCK_MODEL_BUILDING = "Portner SimLock B1 (inngangsdør)"
