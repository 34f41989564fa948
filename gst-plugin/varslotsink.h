/* varslotsink: sends buffers to varslotsrc elements in other processes as slot handles. */
#ifndef GST_VARSLOT_SINK_H
#define GST_VARSLOT_SINK_H

#include <gst/base/gstbasesink.h>

G_BEGIN_DECLS

#define GST_TYPE_VARSLOT_SINK (gst_varslot_sink_get_type())
G_DECLARE_FINAL_TYPE(GstVarslotSink, gst_varslot_sink, GST, VARSLOT_SINK, GstBaseSink)
GST_ELEMENT_REGISTER_DECLARE(varslotsink);

G_END_DECLS
#endif
