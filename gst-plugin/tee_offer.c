/* Offering a sink's allocator to the element upstream of a tee: see tee_offer.h. */
#include "tee_offer.h"

#include "allocator.h"

GST_DEBUG_CATEGORY_EXTERN(gst_varslot_debug);
#define GST_CAT_DEFAULT gst_varslot_debug

/* Elements of one sink and one src pad between the sink and the tee (queues, capsfilters,
 * converters) are walked through; whether upstream's buffers reach the sink through them is
 * asked when it matters, of the branch itself (branch_allocator). A longer chain is not a
 * tee's branch any more. */
#define MAX_HOPS 8

struct VsgTeeOffer {
    GstPad *tee_pad; /* the tee's sink pad, probed */
    gulong probe;
};

static gboolean is_tee(GstElement *e)
{
    GstElementFactory *f = gst_element_get_factory(e);
    return f && g_strcmp0(GST_OBJECT_NAME(f), "tee") == 0;
}

/* The tee upstream of pad (a sink pad): its sink pad, and in *branch the tee's src pad that
 * leads to pad; NULL when there is none. */
static GstPad *tee_upstream_of(GstPad *pad, GstPad **branch)
{
    GstPad *at = gst_object_ref(pad);
    for (int hop = 0; hop < MAX_HOPS; hop++) {
        GstPad *peer = gst_pad_get_peer(at);
        gst_object_unref(at);
        GstElement *e = peer ? gst_pad_get_parent_element(peer) : NULL;
        if (!e) {
            gst_clear_object(&peer);
            return NULL;
        }
        GstPad *next = NULL;
        GST_OBJECT_LOCK(e);
        gboolean tee = is_tee(e);
        if ((tee || e->numsrcpads == 1) && e->numsinkpads == 1)
            next = gst_object_ref(GST_PAD(e->sinkpads->data));
        GST_OBJECT_UNLOCK(e);
        gst_object_unref(e);
        if (next && tee) {
            *branch = peer;
            return next;
        }
        gst_object_unref(peer);
        if (!next)
            return NULL;
        at = next;
    }
    gst_object_unref(at);
    return NULL;
}

/* Our branch's allocator for the query's caps, asked of the branch itself (the tee stops
 * asking its branches at the first that answers nothing, so ours may not have been asked).
 * Only when it is the varslot allocator: then every element of the branch passes upstream's
 * buffers on to the sink (a converter that makes buffers of its own answers for itself), and
 * no branch element's own allocator is ever offered past the tee. */
static GstAllocator *branch_allocator(GstPad *branch, GstQuery *q)
{
    GstCaps *caps = NULL;
    gst_query_parse_allocation(q, &caps, NULL);
    GstQuery *mine = gst_query_new_allocation(caps, FALSE);
    GstAllocator *alloc = NULL;
    if (gst_pad_peer_query(branch, mine) && gst_query_get_n_allocation_params(mine) > 0)
        gst_query_parse_nth_allocation_param(mine, 0, &alloc, NULL);
    gst_query_unref(mine);
    if (alloc && !G_TYPE_CHECK_INSTANCE_TYPE(alloc, GST_TYPE_VARSLOT_ALLOCATOR))
        gst_clear_object(&alloc);
    return alloc;
}

/* Runs the tee's own answer first, then puts our branch's allocator first in it. A tee answers
 * FALSE, and clears what it gathered, when any branch answers nothing (a fakesink, say);
 * upstream takes that as "no preference" and allocates system memory: so we answer TRUE with
 * our allocator then. */
static GstPadProbeReturn offer_allocator(GstPad *pad, GstPadProbeInfo *info, gpointer branch)
{
    GstQuery *q = GST_PAD_PROBE_INFO_QUERY(info);
    if (!q || GST_QUERY_TYPE(q) != GST_QUERY_ALLOCATION || !gst_query_is_writable(q))
        return GST_PAD_PROBE_OK;
    GstPadQueryFunction tee_query = GST_PAD_QUERYFUNC(pad);
    GstObject *tee = gst_pad_get_parent(pad);
    if (!tee_query || !tee) {
        gst_clear_object(&tee);
        return GST_PAD_PROBE_OK;
    }
    gboolean answered = tee_query(pad, tee, q);
    GstAllocator *ours = branch_allocator(branch, q);
    if (!ours) { /* our branch has no allocator to offer: the tee's answer stands */
        gst_object_unref(tee);
        return answered ? GST_PAD_PROBE_HANDLED : GST_PAD_PROBE_DROP;
    }
    GstAllocator *theirs = NULL;
    GstAllocationParams params;
    gst_allocation_params_init(&params);
    if (gst_query_get_n_allocation_params(q) > 0) {
        gst_query_parse_nth_allocation_param(q, 0, &theirs, &params);
        if (!theirs)
            gst_query_set_nth_allocation_param(q, 0, ours, &params);
    } else {
        gst_query_add_allocation_param(q, ours, NULL);
    }
    if (!theirs)
        GST_DEBUG_OBJECT(tee, "offered %" GST_PTR_FORMAT " upstream%s", ours,
                         answered ? "" : " (a branch answered nothing)");
    gst_clear_object(&theirs);
    gst_object_unref(ours);
    gst_object_unref(tee);
    return GST_PAD_PROBE_HANDLED; /* answered: TRUE */
}

VsgTeeOffer *vsg_tee_offer_new(GstElement *sink)
{
    GstPad *sinkpad = gst_element_get_static_pad(sink, "sink");
    GstPad *branch = NULL;
    GstPad *tee_pad = sinkpad ? tee_upstream_of(sinkpad, &branch) : NULL;
    gst_clear_object(&sinkpad);
    if (!tee_pad)
        return NULL;
    VsgTeeOffer *offer = g_new0(VsgTeeOffer, 1);
    offer->tee_pad = tee_pad;
    /* The probe owns its reference to our branch's pad: a callback may still be running as
     * the sink stops and removes the probe. */
    offer->probe = gst_pad_add_probe(tee_pad, GST_PAD_PROBE_TYPE_QUERY_DOWNSTREAM | GST_PAD_PROBE_TYPE_PUSH,
                                     offer_allocator, branch, gst_object_unref);
    GST_INFO_OBJECT(sink, "behind a tee: offering our allocator at %" GST_PTR_FORMAT, tee_pad);
    return offer;
}

void vsg_tee_offer_free(VsgTeeOffer *offer)
{
    if (!offer)
        return;
    gst_pad_remove_probe(offer->tee_pad, offer->probe);
    gst_object_unref(offer->tee_pad);
    g_free(offer);
}
