/* libFuzzer harness: any bytes as a configuration file either load or give
 * a positioned error; never a crash, hang or leak. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "../cfg.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct cfg c;
	char err[512];
	int rc;

	cfg_defaults(&c);
	err[0] = '\0';
	rc = cfg_load("fuzz.yaml", (const char *)data, size, &c, err, sizeof(err));
	if (rc == -22 && strncmp(err, "fuzz.yaml:", 10) != 0)
		abort(); /* every parse error names its position */
	cfg_free(&c);
	return 0;
}
