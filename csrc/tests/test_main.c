/* The one translation unit that instantiates the minitest registry and main(). */
#define MINITEST_MAIN
#include "minitest.h"
