"""Where each algorithm's help lives: a section of the README on the project's home page."""
README = "https://github.com/urban-functions/urban-functions#"

SECTIONS = {
    "classify": "using-it-in-qgis",
    "train": "map-your-own-city",
    "importso2sat": "local-climate-zones-from-sentinel-2-so2sat-lcz42",
    "createvalidationpoints": "validation",
    "assessaccuracy": "validation",
    "planvalidationsample": "validation",
}


def help_url(algorithm_name):
    return README + SECTIONS.get(algorithm_name, "readme")
