"""Surface materials of the fine scene raster.

The layout says what a place is *for* (the function class); the material says what it is
*made of*.  Every sensor is rendered from materials (plus heights and shadows), never from the
class, so a model has to infer function from appearance, as with real data.
"""

NONE = 0
ASPHALT = 1
CONCRETE = 2
PAINT = 3          # road markings, sports-field lines
ROOF_RED = 4       # clay tiles
ROOF_GREY = 5      # concrete tiles, bitumen
ROOF_WHITE = 6     # membrane / gravel flat roofs
ROOF_METAL = 7     # sheet-metal halls
TANK = 8           # storage tanks (painted steel)
GRASS = 9
TREE = 10          # deciduous canopy
CONIFER = 11
WATER = 12
BARE_SOIL = 13
CROP_CEREAL = 14   # winter cereal: green in spring, ripe in summer, sown in autumn
CROP_MAIZE = 15    # summer crop: bare until May, green in summer, stubble in autumn
MEADOW = 16        # grassland / fallow
SPORTS_TURF = 17
TRACK = 18         # red tartan running track
GRAVEL = 19        # rail ballast, yards, paths
RAIL = 20          # steel rails
VEHICLE = 21

NAMES = (
    "none", "asphalt", "concrete", "paint", "roof_red", "roof_grey", "roof_white", "roof_metal",
    "tank", "grass", "tree", "conifer", "water", "bare_soil", "crop_cereal", "crop_maize",
    "meadow", "sports_turf", "track", "gravel", "rail", "vehicle",
)
COUNT = len(NAMES)

ROOFS = (ROOF_RED, ROOF_GREY, ROOF_WHITE, ROOF_METAL, TANK)
VEGETATION = (GRASS, TREE, CONIFER, CROP_CEREAL, CROP_MAIZE, MEADOW, SPORTS_TURF)
