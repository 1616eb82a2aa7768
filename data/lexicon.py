"""Words of the synthetic corpus: vocabularies, GRID's grammar, pronunciations, articulation.

The GRID vocabulary (51 words) and its six-slot sentence grammar are exact; every word has a
hand-written ARPAbet pronunciation. Words outside the hand-written table (the LRW-style list,
user words) get one from a small greedy letter-to-sound rule set: not always how English is
spoken, but deterministic and distinct per spelling, which is what a learnable corpus needs.

Each of the 40 phonemes has one articulatory target (:data:`PHONEMES`): a viseme (mouth opening,
width, rounding, teeth, tongue, lip press) and an acoustic target (F1-F3, voicing, aspiration,
frication band, nasality, plosive burst). :func:`speak` times a word sequence and
:func:`articulate` turns it into one smooth trajectory (:class:`Tracks`) that drives both the
renderer and the voice, so the lips determine the sound.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.ndimage import gaussian_filter1d

from lipx.errors import InputError

GRID_SLOTS: tuple[tuple[str, ...], ...] = (
    ("bin", "lay", "place", "set"),
    ("blue", "green", "red", "white"),
    ("at", "by", "in", "with"),
    tuple("abcdefghijklmnopqrstuvxyz"),  # GRID has no "w" in the letter slot
    ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"),
    ("again", "now", "please", "soon"),
)
"""GRID's sentence grammar: command, colour, preposition, letter, digit, adverb."""

GRID_WORDS: tuple[str, ...] = tuple(w for slot in GRID_SLOTS for w in slot)

_DIGIT_CODE = {"zero": "z", "one": "1", "two": "2", "three": "3", "four": "4", "five": "5",
               "six": "6", "seven": "7", "eight": "8", "nine": "9"}

PRONUNCIATIONS: dict[str, str] = {
    # GRID
    "bin": "B IH N", "lay": "L EY", "place": "P L EY S", "set": "S EH T",
    "blue": "B L UW", "green": "G R IY N", "red": "R EH D", "white": "W AY T",
    "at": "AE T", "by": "B AY", "in": "IH N", "with": "W IH DH",
    "a": "EY", "b": "B IY", "c": "S IY", "d": "D IY", "e": "IY", "f": "EH F", "g": "JH IY",
    "h": "EY CH", "i": "AY", "j": "JH EY", "k": "K EY", "l": "EH L", "m": "EH M", "n": "EH N",
    "o": "OW", "p": "P IY", "q": "K Y UW", "r": "AA R", "s": "EH S", "t": "T IY", "u": "Y UW",
    "v": "V IY", "x": "EH K S", "y": "W AY", "z": "Z IY",
    "zero": "Z IH R OW", "one": "W AH N", "two": "T UW", "three": "TH R IY", "four": "F AO R",
    "five": "F AY V", "six": "S IH K S", "seven": "S EH V AH N", "eight": "EY T",
    "nine": "N AY N",
    "again": "AH G EH N", "now": "N AW", "please": "P L IY Z", "soon": "S UW N",
    # context words around LRW targets
    "the": "DH AH", "of": "AH V", "and": "AE N D", "to": "T UW", "is": "IH Z", "that": "DH AE T",
    "it": "IH T", "we": "W IY", "this": "DH IH S", "for": "F AO R", "on": "AA N",
    "was": "W AA Z", "have": "HH AE V", "be": "B IY", "are": "AA R", "not": "N AA T",
    "but": "B AH T", "they": "DH EY", "you": "Y UW", "there": "DH EH R", "about": "AH B AW T",
}

CONTEXT_WORDS: tuple[str, ...] = (
    "the", "of", "and", "to", "is", "that", "it", "we", "this", "for", "on", "was", "have",
    "be", "are", "not", "but", "they", "you", "there",
)
"""Short words spoken around an LRW-layout target word (never targets themselves)."""

LRW_STYLE_WORDS: tuple[str, ...] = tuple("""
ABOUT ABSOLUTELY ACCESS ACCORDING ACROSS ACTION ACTUALLY AFFAIRS AFTERNOON AGAINST AGREEMENT
ALLOWED ALMOST ALREADY ALWAYS AMERICA AMOUNT ANNOUNCED ANOTHER ANSWER ANYTHING AROUND ARRESTED
ATTACK AUTHORITIES BANKS BECAUSE BEFORE BEHIND BELIEVE BENEFIT BETTER BETWEEN BIGGEST BILLION
BLACK BORDER BRITAIN BROUGHT BUDGET BUILDING BUSINESS CALLED CAMPAIGN CANCER CAPITAL CENTRAL
CERTAINLY CHALLENGE CHANCE CHANGE CHARGE CHIEF CHILDREN CHINA CLAIMS CLOSE CLOUD COMING
COMMUNITY COMPANY CONFERENCE CONFLICT CONTINUE CONTROL COUNCIL COUNTRY COUPLE COURT CRIME
CRISIS CURRENT CUSTOMERS DAVID DEATH DEBATE DECISION DEFICIT DEGREES DESPITE DETAILS DIFFERENT
DIFFICULT DURING EARLY ECONOMY EDUCATION ELECTION EMERGENCY ENERGY ENGLAND ENOUGH EUROPE
EVENING EVERYBODY EVIDENCE EXACTLY EXAMPLE EXPECTED FAMILY FIGHTING FIGURES FINANCIAL FIRST
FOCUS FOOTBALL FOREIGN FORMER FORWARD FRANCE FRIDAY FRONT FURTHER FUTURE GAMES GENERAL GERMANY
GETTING GLOBAL GOING GOVERNMENT GREAT GROUND GROWTH GUILTY HAPPENED HEALTH HEART HEAVY HISTORY
HOSPITAL HOUSE HUMAN HUNDREDS IMMIGRATION IMPACT IMPORTANT INCREASE INDUSTRY INFLATION
INFORMATION INQUIRY INSIDE INTEREST INVESTMENT ISLAMIC ISSUES JUDGE JUSTICE KILLED LABOUR
LARGE LATEST LEADERSHIP LEAVE LEGAL LEVEL LIKELY LITTLE LIVING LOCAL LONDON LOOKING MAJORITY
MAKING MANCHESTER MARKET MASSIVE MATTER MAYBE MEDIA MEDICAL MEETING MEMBERS MESSAGE MIDDLE
MIGRANTS MILITARY MILLION MINISTER MINUTES MISSING MOMENT MONEY MONTHS MORNING MURDER
NATIONAL NEVER NIGHT NORTHERN NOTHING NUMBER OBAMA OFFICE OFFICIALS OPERATION OPPOSITION
ORDER OUTSIDE PARENTS PARLIAMENT PARTY PATIENTS PEOPLE PERHAPS PERSONAL PHONE PLACES POINT
POLICE POLITICAL POSITION POSSIBLE POWER PRESIDENT PRESSURE PRETTY PRICES PRIME PRISON
PRIVATE PROBABLY PROBLEM PROCESS PROTECT PUBLIC QUESTION QUITE RATHER REALLY REASON RECORD
REFERENDUM REMEMBER REPORT RESPONSE RESULT RETURN RIGHTS RUNNING RUSSIA SAYING SCHOOL
SCOTLAND SECOND SECRETARY SECURITY SENIOR SERIOUS SERVICE SEVERAL SHORT SHOULD SIGNIFICANT
SIMPLY SINGLE SITUATION SMALL SOCIAL SOMETHING SOUTH SPEAKING SPECIAL SPEECH SPENDING STAFF
STAND START STATEMENT STILL STORY STREET STRONG SUNDAY SUNSHINE SUPPORT SYRIA SYSTEM TAKING
TALKING TEMPERATURES THEMSELVES THINK THOUSANDS THREAT THROUGH TODAY TOGETHER TOMORROW TONIGHT
TOWARDS TRADE TRIAL TRYING UNDER UNDERSTAND UNION UNITED USING VICTIMS VIOLENCE VOTERS
WAITING WARNING WATCHING WATER WEAPONS WEATHER WEEKEND WELCOME WELFARE WESTERN WHETHER WHOLE
WITHOUT WOMEN WORKERS WORKING WORLD WRONG YESTERDAY YOUNG
""".split())
"""News-style words in the spirit of LRW's 500 classes (not LRW's exact list)."""


def pronounce(word: str) -> tuple[str, ...]:
    """ARPAbet phonemes of a word (case-insensitive): the table, else letter-to-sound rules.

    Raises:
        InputError: the word has no letters.
    """
    key = word.lower()
    if key in PRONUNCIATIONS:
        return tuple(PRONUNCIATIONS[key].split())
    letters = "".join(ch for ch in key.upper() if ch.isalpha())
    if not letters:
        raise InputError(f"cannot pronounce {word!r}: expected a word made of letters")
    return _letters_to_sounds(letters)


# Greedy rules, longest first: (spelling, phonemes).
_RULES: tuple[tuple[str, str], ...] = (
    ("OUGHT", "AO T"), ("TION", "SH AH N"), ("SION", "ZH AH N"), ("IGHT", "AY T"),
    ("OUGH", "AH F"), ("EIGH", "EY"), ("TCH", "CH"), ("SCH", "S K"), ("QU", "K W"),
    ("CK", "K"), ("PH", "F"), ("TH", "TH"), ("SH", "SH"), ("CH", "CH"), ("WH", "W"),
    ("NG", "NG"), ("GH", ""), ("WR", "R"), ("KN", "N"), ("EE", "IY"), ("EA", "IY"),
    ("OO", "UW"), ("OU", "AW"), ("OW", "OW"), ("AI", "EY"), ("AY", "EY"), ("OI", "OY"),
    ("OY", "OY"), ("AU", "AO"), ("AW", "AO"), ("IE", "IY"), ("EI", "EY"), ("EY", "IY"),
    ("UI", "UW"), ("ER", "ER"), ("IR", "ER"), ("UR", "ER"), ("AR", "AA R"), ("OR", "AO R"),
    ("X", "K S"), ("J", "JH"), ("B", "B"), ("D", "D"), ("F", "F"), ("H", "HH"), ("K", "K"),
    ("L", "L"), ("M", "M"), ("N", "N"), ("P", "P"), ("R", "R"), ("T", "T"), ("V", "V"),
    ("W", "W"), ("Z", "Z"), ("A", "AE"), ("E", "EH"), ("I", "IH"), ("O", "AA"), ("U", "AH"),
)
_LONG = {"A": "EY", "E": "IY", "I": "AY", "O": "OW", "U": "UW"}
_VOWELS = set("AEIOUY")
_SINGLE = {sp: ph for sp, ph in _RULES if len(sp) == 1}


def _letters_to_sounds(w: str) -> tuple[str, ...]:
    """Greedy spelling-to-ARPAbet conversion of an upper-case word."""
    # A final silent "e" lengthens the vowel before a single consonant ("PRIME", "PHONE").
    magic = len(w) >= 4 and w[-1] == "E" and w[-2] not in _VOWELS and w[-3] in _LONG
    if len(w) > 3 and w[-1] == "E" and w[-2] not in _VOWELS:
        w = w[:-1]
    out: list[str] = []
    i = 0
    while i < len(w):
        ch = w[i]
        if i > 0 and ch == w[i - 1] and ch not in _VOWELS:
            i += 1  # doubled consonant
            continue
        rule = next(((sp, ph) for sp, ph in _RULES if len(sp) > 1 and w.startswith(sp, i)), None)
        if rule is None:
            rule = (ch, _single_letter(w, i, magic))
        out.extend(rule[1].split())
        i += len(rule[0])
    return tuple(out) if out else ("AH",)


def _single_letter(w: str, i: int, magic: bool) -> str:
    """Phonemes of the single letter ``w[i]`` in its context."""
    ch = w[i]
    nxt = w[i + 1] if i + 1 < len(w) else ""
    if ch == "C":
        return "S" if nxt in ("E", "I", "Y") else "K"
    if ch == "G":
        return "JH" if nxt in ("E", "I", "Y") and i > 0 else "G"
    if ch == "Y":
        return "Y" if i == 0 else "IY"
    if ch == "S":
        between = 0 < i < len(w) - 1 and w[i - 1] in _VOWELS and nxt in _VOWELS
        final_voiced = i == len(w) - 1 and i > 0 and w[i - 1] in "EDGNMLRV"
        return "Z" if between or final_voiced else "S"
    if magic and i == len(w) - 2 and ch in _LONG:
        return _LONG[ch]
    return _SINGLE.get(ch, "")


def grid_vocabulary(n_words: int) -> tuple[tuple[str, ...], ...]:
    """A subset of GRID's slots with ``n_words`` words in all, taken round-robin over the slots.

    Raises:
        InputError: ``n_words`` is not in [6, 51] (each slot needs at least one word).
    """
    if not 6 <= n_words <= len(GRID_WORDS):
        raise InputError(f"GRID vocabulary size must be in [6, {len(GRID_WORDS)}] (one word per "
                         f"grammar slot at least), got {n_words}")
    keep: list[list[str]] = [[] for _ in GRID_SLOTS]
    total, i = 0, 0
    while total < n_words:
        for slot, kept in zip(GRID_SLOTS, keep, strict=True):
            if i < len(slot) and total < n_words:
                kept.append(slot[i])
                total += 1
        i += 1
    return tuple(tuple(k) for k in keep)


def lrw_vocabulary(n_words: int) -> tuple[str, ...]:
    """``n_words`` words spread evenly over :data:`LRW_STYLE_WORDS` (sorted, like LRW's classes).

    Raises:
        InputError: ``n_words`` is not in [2, len(LRW_STYLE_WORDS)].
    """
    if not 2 <= n_words <= len(LRW_STYLE_WORDS):
        raise InputError(f"LRW vocabulary size must be in [2, {len(LRW_STYLE_WORDS)}], "
                         f"got {n_words}")
    idx = np.round(np.linspace(0, len(LRW_STYLE_WORDS) - 1, n_words)).astype(int)
    return tuple(sorted(LRW_STYLE_WORDS[i] for i in idx))


def grid_sentence(slots: tuple[tuple[str, ...], ...], rng: np.random.Generator) -> tuple[str, ...]:
    """One random GRID sentence (six words, one per slot)."""
    return tuple(slot[int(rng.integers(len(slot)))] for slot in slots)


def grid_id(words: tuple[str, ...]) -> str:
    """GRID's file id of a sentence: the first letters, the letter, and the digit ('z' = zero).

    ``("bin", "blue", "at", "f", "two", "now")`` -> ``"bbaf2n"``.
    """
    command, colour, prep, letter, digit, adverb = words
    return f"{command[0]}{colour[0]}{prep[0]}{letter}{_DIGIT_CODE[digit]}{adverb[0]}"


# --- phonemes: one articulatory target each ------------------------------------------------

VISEME: tuple[str, ...] = ("open", "width", "round", "teeth", "tongue", "press")
"""Mouth parameters: opening 0-1, spread -1 (narrow) to 1 (wide), rounding 0-1, teeth and tongue
visibility 0-1, lip press 0-1 (lips thinned, rolled in)."""
ACOUSTIC: tuple[str, ...] = ("f1", "f2", "f3", "voice", "asp", "fric", "fc", "fbw", "nasal")
"""Formants (Hz, adult male), voicing, aspiration and frication amplitudes, frication band
centre (Hz) and width (octaves), nasality."""
CHANNELS: tuple[str, ...] = VISEME + ACOUSTIC + ("burst", "pitch")
"""All trajectory channels; ``burst`` is a plosive release pulse, ``pitch`` the relative F0."""
CH: dict[str, int] = {name: i for i, name in enumerate(CHANNELS)}

# name kind ms | open width round teeth tongue press | F1 F2 F3 | voice asp fric fc fbw nasal
_TABLE = """
SIL sil    90 | .02  0   0   0   0  .2 | 500 1500 2500 |  0  0  0    -    -  0
IY  vowel 110 | .25 .8   0  .9  .1   0 | 270 2290 3010 |  1  0  0    -    -  0
IH  vowel  80 | .38 .5   0  .6 .15   0 | 390 1990 2550 |  1  0  0    -    -  0
EH  vowel 100 | .5  .4   0  .5  .2   0 | 530 1840 2480 |  1  0  0    -    -  0
AE  vowel 140 | .72 .5   0 .45  .3   0 | 660 1720 2410 |  1  0  0    -    -  0
AA  vowel 140 | .95  0  .1  .3 .35   0 | 730 1090 2440 |  1  0  0    -    -  0
AO  vowel 130 | .75 -.3 .6  .2 .25   0 | 570  840 2410 |  1  0  0    -    -  0
UH  vowel  80 | .35 -.3 .6  .1  .1   0 | 440 1020 2240 |  1  0  0    -    -  0
UW  vowel 120 | .2  -.7  1   0   0   0 | 300  870 2240 |  1  0  0    -    -  0
AH  vowel  70 | .6    0 .1  .3 .25   0 | 640 1190 2390 |  1  0  0    -    -  0
ER  vowel 120 | .35 -.2 .5  .3  .1   0 | 490 1350 1690 |  1  0  0    -    -  0
EY  diph  160 | .48 .45  0  .5  .2   0 | 480 1850 2500 |  1  0  0    -    -  0
AY  diph  180 | .9    0 .1  .3 .35   0 | 720 1150 2450 |  1  0  0    -    -  0
OW  diph  160 | .6 -.35 .7 .15  .2   0 | 550  900 2400 |  1  0  0    -    -  0
AW  diph  180 | .9    0 .1  .3 .35   0 | 720 1200 2450 |  1  0  0    -    -  0
OY  diph  190 | .75 -.3 .6  .2 .25   0 | 550  850 2400 |  1  0  0    -    -  0
P   stop   90 | 0   .15  0   0   0   1 | 200  900 2200 |  0  0  0 1200  1.5  0
B   stop   80 | 0   -.1 .15  0   0  .5 | 200  900 2200 | .25 0  0 1200  1.5  0
M   nasal  80 | 0     0 .05  0   0 .15 | 250 1000 2200 | .7  0  0    -    -  1
T   stop   85 | .15  .3  0  .8  .5   0 | 250 1750 2700 |  0  0  0 4500   .8  0
D   stop   70 | .2   .2  0  .6  .6   0 | 250 1750 2700 | .25 0  0 4500   .8  0
N   nasal  70 | .2   .1  0  .5  .7   0 | 250 1750 2700 | .7  0  0    -    -  1
K   stop   90 | .3   .1  0  .4   0   0 | 280 2000 2400 |  0  0  0 2200   .6  0
G   stop   75 | .35   0 .05 .3   0   0 | 280 2000 2400 | .25 0  0 2200   .6  0
NG  nasal  80 | .3    0  0  .4   0   0 | 280 2000 2400 | .7  0  0    -    -  1
CH  affr  120 | .2  -.4 .8  .9   0   0 | 250 2000 2600 |  0  0  0 3300   .7  0
JH  affr  110 | .25 -.5 .8  .7   0   0 | 250 2000 2600 | .5  0  0 3300   .7  0
SH  fric  120 | .2  -.5 .9  .8   0   0 | 250 2000 2600 |  0  0 .22 3300  .6  0
ZH  fric   90 | .25 -.6 .9  .6   0   0 | 250 2000 2600 | .5  0 .12 3300  .6  0
F   fric  100 | .1   .1  0   1   0  .3 | 250 1100 2400 |  0  0 .07 5000 1.0  0
V   fric   70 | .14   0 .1  .8   0  .2 | 250 1100 2400 | .5  0 .04 5000 1.0  0
TH  fric  100 | .22  .2  0  .7   1   0 | 250 1750 2700 |  0  0 .06 5500  1.0  0
DH  fric   50 | .25  .1  0  .5  .9   0 | 250 1750 2700 | .5  0 .04 5500 1.0  0
S   fric  110 | .12  .6  0   1  .1   0 | 250 1750 2700 |  0  0 .2 6000   .5  0
Z   fric   90 | .16  .4  0  .8  .2   0 | 250 1750 2700 | .5  0 .12 6000  .5  0
HH  aspir  60 | -    -   -   -   -   - |   -    -    - |  0 .6  0    -    -  0
L   liquid 70 | .35  .1  0  .6  .9   0 | 360 1300 2900 | .85 0  0    -    -  0
R   liquid 70 | .25 -.4 .7  .3  .2   0 | 400 1150 1600 | .85 0  0    -    -  0
W   glide  70 | .1  -.9  1   0   0   0 | 300  650 2200 | .85 0  0    -    -  0
Y   glide  60 | .2   .7  0  .7  .2   0 | 260 2200 3000 | .85 0  0    -    -  0
"""
_DIPHTHONG_END = {"EY": "IY", "AY": "IH", "OW": "UW", "AW": "UH", "OY": "IY"}


@dataclass(frozen=True)
class Phoneme:
    """One phoneme's articulatory target."""

    name: str
    kind: str
    """sil, vowel, diph, stop, affr, fric, aspir, nasal, liquid or glide."""
    duration: float
    """Seconds at speaking rate 1."""
    target: np.ndarray
    """(len(CHANNELS),) float64 target; NaN where the phoneme leaves a channel to its
    neighbours (``burst`` and ``pitch`` are always NaN)."""


def _parse_table(text: str) -> dict[str, Phoneme]:
    out = {}
    for line in text.strip().splitlines():
        head, vis, fmt, src = line.split("|")
        name, kind, ms = head.split()
        nums = [float("nan") if v == "-" else float(v) for v in (vis + fmt + src).split()]
        target = np.array(nums + [float("nan")] * 2, dtype=np.float64)
        out[name] = Phoneme(name, kind, float(ms) / 1000.0, target)
    return out


PHONEMES: dict[str, Phoneme] = _parse_table(_TABLE)
"""The inventory: 40 ARPAbet phonemes (stress-free) including ``SIL``."""


# --- timing and trajectories ---------------------------------------------------------------

@dataclass(frozen=True)
class Phone:
    """A timed phoneme (seconds)."""

    name: str
    start: float
    end: float


@dataclass(frozen=True)
class Utterance:
    """A timed phoneme sequence with word spans; silence pads one second on both sides."""

    phones: tuple[Phone, ...]
    words: tuple[tuple[str, float, float], ...]
    """(word, start, end) in seconds."""

    @property
    def start(self) -> float:
        return self.words[0][1]

    @property
    def end(self) -> float:
        return self.words[-1][2]

    def retimed(self, start: float, scale: float = 1.0) -> Utterance:
        """The same utterance with speech starting at ``start`` and durations times ``scale``."""
        def f(t: float) -> float:
            return start + (t - self.start) * scale
        phones = tuple(Phone(p.name, f(p.start), f(p.end)) for p in self.phones)
        return Utterance(phones, tuple((w, f(a), f(b)) for w, a, b in self.words))


def speak(words: tuple[str, ...], rate: float, rng: np.random.Generator,
          pause_prob: float = 0.0) -> Utterance:
    """Time a word sequence: phoneme durations / ``rate``, +-10 % jitter, final lengthening.

    Speech starts at t = 0; between words a short pause is inserted with ``pause_prob``.
    """
    phones = [Phone("SIL", -1.0, 0.0)]
    spans = []
    t = 0.0
    for i, word in enumerate(words):
        names = pronounce(word)
        start = t
        for j, name in enumerate(names):
            d = PHONEMES[name].duration / rate * float(rng.uniform(0.9, 1.1))
            if i == len(words) - 1 and j == len(names) - 1:
                d *= 1.3
            phones.append(Phone(name, t, t + d))
            t += d
        spans.append((word, start, t))
        if i < len(words) - 1 and rng.random() < pause_prob:
            d = float(rng.uniform(0.06, 0.2))
            phones.append(Phone("SIL", t, t + d))
            t += d
    phones.append(Phone("SIL", t, t + 1.0))
    return Utterance(tuple(phones), tuple(spans))


def _keyframes(ph: Phoneme) -> tuple[list[tuple[float, np.ndarray]], list[float]]:
    """Keyframes (fraction of the phone, target) and burst times (fractions) of a phoneme."""
    tgt = ph.target
    if ph.kind in ("stop", "affr"):
        closed = tgt.copy()
        closed[CH["fric"]] = 0.0
        voiced = tgt[CH["voice"]] > 0
        if ph.kind == "stop":
            release = np.full_like(tgt, np.nan)
            release[[CH["voice"], CH["asp"], CH["fric"]]] = (0.8, 0.0, 0.0) if voiced \
                else (0.0, 0.5, 0.0)
            return [(0.05, closed), (0.6, closed), (0.78, release)], [0.62]
        frication = tgt.copy()
        frication[CH["fric"]] = 0.12 if voiced else 0.22
        return [(0.05, closed), (0.35, closed), (0.55, frication), (0.95, frication)], [0.38]
    if ph.kind == "diph":
        end = PHONEMES[_DIPHTHONG_END[ph.name]].target
        return [(0.15, tgt), (0.9, end)], []
    if ph.kind == "sil":
        return [(0.0, tgt), (1.0, tgt)], []
    if ph.kind == "glide":
        return [(0.3, tgt), (0.6, tgt)], []
    return [(0.2, tgt), (0.8, tgt)], []


_SMOOTH_MS = {"open": 15, "width": 15, "round": 15, "teeth": 15, "tongue": 15, "press": 15,
              "f1": 10, "f2": 10, "f3": 10, "voice": 5, "asp": 5, "fric": 5, "fc": 10,
              "fbw": 10, "nasal": 8}
_DEFAULTS = {"fc": 4000.0, "fbw": 1.0, "f1": 500.0, "f2": 1500.0, "f3": 2500.0}


@dataclass(frozen=True)
class Tracks:
    """An articulation trajectory sampled at ``rate`` Hz from time ``t0`` (seconds)."""

    t0: float
    rate: float
    values: np.ndarray
    """(N, len(CHANNELS)) float64."""

    def sample(self, times: np.ndarray) -> np.ndarray:
        """Linear interpolation at ``times`` (seconds, any shape (M,)) -> (M, C), clamped."""
        pos = np.clip((np.asarray(times, np.float64) - self.t0) * self.rate, 0,
                      len(self.values) - 1)
        i0 = np.minimum(pos.astype(np.int64), len(self.values) - 2)
        frac = (pos - i0)[:, None]
        return self.values[i0] * (1.0 - frac) + self.values[i0 + 1] * frac


def articulate(utt: Utterance, t0: float, t1: float, rate: float = 1000.0) -> Tracks:
    """The smooth articulation trajectory of an utterance over [t0, t1) seconds.

    Targets are interpolated linearly between keyframes, channel by channel (a phoneme that
    leaves a channel unspecified takes it from its neighbours: coarticulation), then smoothed
    with a Gaussian per channel group (lips slower than the voice source).
    """
    n = int(np.ceil((t1 - t0) * rate)) + 2
    times = t0 + np.arange(n) / rate
    xs: list[list[float]] = [[] for _ in CHANNELS]
    ys: list[list[float]] = [[] for _ in CHANNELS]
    bursts: list[tuple[float, float]] = []
    for ph in utt.phones:
        spec = PHONEMES[ph.name]
        keys, burst_at = _keyframes(spec)
        for frac, tgt in keys:
            t = ph.start + frac * (ph.end - ph.start)
            for c in np.flatnonzero(~np.isnan(tgt)):
                xs[c].append(t)
                ys[c].append(float(tgt[c]))
        voiced = spec.target[CH["voice"]] > 0
        bursts += [(ph.start + f * (ph.end - ph.start), 0.12 if voiced else 0.25)
                   for f in burst_at]
    values = np.zeros((n, len(CHANNELS)))
    for name, sigma_ms in _SMOOTH_MS.items():
        ch = CH[name]
        col = (np.interp(times, xs[ch], ys[ch]) if xs[ch]
               else np.full(n, _DEFAULTS.get(name, 0.0)))
        values[:, ch] = gaussian_filter1d(col, sigma_ms * rate / 1000.0, mode="nearest")
    for t, amp in bursts:
        values[:, CH["burst"]] += amp * np.exp(-0.5 * ((times - t) / 0.004) ** 2)
    values[:, CH["pitch"]] = _pitch(utt, times)
    return Tracks(t0, rate, values)


def _pitch(utt: Utterance, times: np.ndarray) -> np.ndarray:
    """Relative F0: declination from +8 % to -8 % over the speech, and a +12 % accent on the
    first vowel of each word."""
    s0, s1 = utt.start, utt.end
    pitch = 1.08 - 0.16 * np.clip((times - s0) / max(s1 - s0, 1e-3), 0.0, 1.0)
    for _word, a, b in utt.words:
        vowels = [p for p in utt.phones if a <= p.start < b
                  and PHONEMES[p.name].kind in ("vowel", "diph")]
        if vowels:
            centre = 0.5 * (vowels[0].start + vowels[0].end)
            pitch += 0.12 * np.exp(-0.5 * ((times - centre) / 0.07) ** 2)
    return pitch
