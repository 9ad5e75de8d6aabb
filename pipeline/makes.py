"""Canonical spelling of vehicle makes.

`canonical_make("toyota") == "Toyota"`, `canonical_make("BMW") == "BMW"`,
`canonical_make("mercedes benz") == "Mercedes-Benz"`, `canonical_make("chevy") ==
"Chevrolet"`. Known makes are matched ignoring case and the separators space, hyphen,
underscore and dot; a few unambiguous nicknames ("vw", "chevy", "mercedes") map to the
make too, so dealers see one spelling per make.

Unknown makes: an all-lower-case value is title-cased ("karma" -> "Karma"); anything
else (upper case, mixed case) is kept as given, since it may be an acronym or a
deliberate spelling ("BYD", "DeLorean"). The function is idempotent.
"""

from __future__ import annotations

import re
import unicodedata

#: Every make we know, spelled the way its maker does.
KNOWN_MAKES: tuple[str, ...] = (
    "Acura", "Alfa Romeo", "AM General", "Aston Martin", "Audi", "Bentley", "BMW",
    "Bugatti", "Buick", "BYD", "Cadillac", "Chevrolet", "Chrysler", "Daewoo", "Daihatsu",
    "DeLorean", "Dodge", "Eagle", "Ferrari", "Fiat", "Fisker", "Ford", "Freightliner",
    "Genesis", "Geo", "GMC", "Harley-Davidson", "Honda", "Hummer", "Hyundai", "Ineos",
    "Infiniti", "International", "Isuzu", "Jaguar", "Jeep", "Karma", "Kawasaki",
    "Kenworth", "Kia", "Lamborghini", "Lancia", "Land Rover", "Lexus", "Lincoln", "Lotus",
    "Lucid", "Mack", "Maserati", "Maybach", "Mazda", "McLaren", "Mercedes-Benz",
    "Mercury", "MG", "MINI", "Mitsubishi", "Nissan", "Oldsmobile", "Opel", "Peterbilt",
    "Peugeot", "Plymouth", "Polestar", "Pontiac", "Porsche", "Ram", "Renault", "Rivian",
    "Rolls-Royce", "Saab", "Saturn", "Scion", "SEAT", "Skoda", "Smart", "SRT", "Subaru",
    "Suzuki", "Tesla", "Toyota", "Triumph", "VinFast", "Volkswagen", "Volvo", "Yamaha",
)  # fmt: skip

#: Other names for a known make (keys are lookup keys, see `_key`).
ALIASES: dict[str, str] = {
    "alfa": "Alfa Romeo",
    "chevy": "Chevrolet",
    "landrover": "Land Rover",
    "mercedes": "Mercedes-Benz",
    "mercedesbenz": "Mercedes-Benz",
    "rollsroyce": "Rolls-Royce",
    "harley": "Harley-Davidson",
    "harleydavidson": "Harley-Davidson",
    "vw": "Volkswagen",
}

_SEPARATORS = re.compile(r"[\s\-_.]+")


def _key(name: str) -> str:
    """Lookup key: case-folded, separators collapsed to one space."""
    return _SEPARATORS.sub(" ", name.casefold()).strip()


_CANONICAL: dict[str, str] = {_key(make): make for make in KNOWN_MAKES}
_CANONICAL.update({_key(make).replace(" ", ""): make for make in KNOWN_MAKES})
_CANONICAL.update({_key(alias): make for alias, make in ALIASES.items()})


def known_make(name: str) -> str | None:
    """The canonical spelling of `name` when it is a known make, else None."""
    key = _key(name)
    return _CANONICAL.get(key) or _CANONICAL.get(key.replace(" ", ""))


def canonical_make(name: str) -> str:
    """`name` in its canonical case (see the module docstring); idempotent."""
    known = known_make(name)
    if known is not None:
        return known
    if name == name.lower() and name != name.title():
        return unicodedata.normalize("NFC", name.title())
    return name


def make_from_manufacturer(manufacturer: str) -> str | None:
    """The known make a VIN decoder's manufacturer title names, if any.

    Decoders report titles such as "Chevrolet Mexico", "Tesla Motors USA" or
    "Mercedes-Benz (Sprinter)": the longest known make the title starts with wins.
    Titles naming a group rather than a make ("General Motors", "FCA") give None.
    """
    words = _key(re.sub(r"[()/,]", " ", manufacturer)).split(" ")
    for length in range(min(len(words), 3), 0, -1):
        found = known_make(" ".join(words[:length]))
        if found is not None:
            return found
    return _MANUFACTURER_MAKES.get(_key(manufacturer))


#: Manufacturer titles that name a make without starting with it.
_MANUFACTURER_MAKES: dict[str, str] = {
    "fuji heavy industries": "Subaru",
}
