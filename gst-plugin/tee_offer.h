/* Offering a sink's allocator to the element upstream of a tee.
 *
 * A tee answers its upstream's ALLOCATION query itself: it asks every branch, keeps the
 * largest size, alignment and buffer count, and drops every allocator and pool (they are
 * tied to one branch). So a decoder or source behind `tee ! queue ! varslotsink` never hears
 * of the varslot allocator, allocates system memory, and the sink copies every frame into a
 * slot. A VsgTeeOffer reaches across the tee: a probe on the tee's sink pad puts the sink's
 * allocator first in the tee's answer when the tee offers none, keeping the tee's alignment
 * and padding. The other branches read those buffers as any memory: a slot maps like system
 * memory. */
#ifndef GST_VARSLOT_TEE_OFFER_H
#define GST_VARSLOT_TEE_OFFER_H

#include <gst/gst.h>

G_BEGIN_DECLS

typedef struct VsgTeeOffer VsgTeeOffer;

/* Walks upstream from sink's "sink" pad through elements of one sink and one src pad (queue,
 * capsfilter, a converter) to a tee, and probes its sink pad. NULL when there is no tee
 * there. What is offered is the varslot allocator the sink's branch answers with, asked anew
 * each time: a converter that makes buffers of its own answers without it. */
VsgTeeOffer *vsg_tee_offer_new(GstElement *sink);
void vsg_tee_offer_free(VsgTeeOffer *offer);

G_END_DECLS

#endif
