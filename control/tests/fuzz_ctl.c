/* libFuzzer harness: any bytes as a control frame must yield a well-formed
 * reply (never a crash, leak or NULL). */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "../ctl.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static int h_ok(void *ctx, const struct ctl_peer *peer, json_t *args,
		json_t **result, const char **code, char **msg)
{
	if (json_object_get(args, "fail")) {
		*code = "bad_args";
		*msg = strdup("asked to fail");
		return -1;
	}
	*result = json_deep_copy(args);
	return 0;
}

static const struct ctl_command cmds[] = {
	{ "get", false, h_ok, "" },
	{ "set", true, h_ok, "" },
};

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct ctl_peer peer = { 1, 1000, 1000, size % 2 ? CTL_ADMIN : CTL_READONLY };
	json_t *r = ctl_handle_frame(cmds, 2, NULL, &peer, (const char *)data, size);

	if (r == NULL || !json_is_object(r) || json_object_get(r, "ok") == NULL)
		abort();
	json_decref(r);
	return 0;
}
