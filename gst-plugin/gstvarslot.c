/* The varslot plugin: varslotsink, varslotsrc, and the "varslot" allocator, which an
 * application can make the default: gst_allocator_set_default(gst_allocator_find("varslot")). */
#include "allocator.h"
#include "varslotsink.h"
#include "varslotsrc.h"

GST_DEBUG_CATEGORY(gst_varslot_debug);

static gboolean plugin_init(GstPlugin *plugin)
{
    GST_DEBUG_CATEGORY_INIT(gst_varslot_debug, "varslot", 0, "varslot shared-memory slots");
    static gsize registered;
    if (g_once_init_enter(&registered)) {
        /* Its segment is opened at the first allocation, not here: loading the plugin (for
         * gst-inspect, say) must not create anything. */
        gst_allocator_register("varslot", gst_varslot_allocator_new(NULL));
        g_once_init_leave(&registered, 1);
    }
    return GST_ELEMENT_REGISTER(varslotsink, plugin) && GST_ELEMENT_REGISTER(varslotsrc, plugin);
}

#define PACKAGE "varslot"
GST_PLUGIN_DEFINE(GST_VERSION_MAJOR, GST_VERSION_MINOR, varslot,
                  "Zero-copy buffers across processes in varslot shared-memory slots", plugin_init,
                  "0.1", "LGPL", "varslot", "varslot source tree")
