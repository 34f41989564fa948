/* varslotsrc: receives buffers from a varslotsink in another process, in place. */
#ifndef GST_VARSLOT_SRC_H
#define GST_VARSLOT_SRC_H

#include <gst/base/gstpushsrc.h>

G_BEGIN_DECLS

#define GST_TYPE_VARSLOT_SRC (gst_varslot_src_get_type())
G_DECLARE_FINAL_TYPE(GstVarslotSrc, gst_varslot_src, GST, VARSLOT_SRC, GstPushSrc)
GST_ELEMENT_REGISTER_DECLARE(varslotsrc);

G_END_DECLS
#endif
