/* Offering a sink's allocator to the element upstream of a tee: see tee_offer.h. */
#include "tee_offer.h"

GST_DEBUG_CATEGORY_EXTERN(gst_varslot_debug);
#define GST_CAT_DEFAULT gst_varslot_debug

/* Elements between the sink and the tee that pass the query on unchanged: a few queues and
 * capsfilters; a longer chain is not a tee's branch any more. */
#define MAX_HOPS 8

struct VsgTeeOffer {
    GstPad *tee_pad;
    gulong probe;
};

/* The probe's own data, freed when GStreamer is done with the probe (a callback may still
 * be running as the sink stops): so it holds its own reference to the sink. */
typedef struct {
    GstElement *sink;
    VsgAllocatorGetter get;
} OfferProbe;

static gboolean is_tee(GstElement *e)
{
    GstElementFactory *f = gst_element_get_factory(e);
    return f && g_strcmp0(GST_OBJECT_NAME(f), "tee") == 0;
}

/* The tee's sink pad upstream of pad (a sink pad), or NULL. */
static GstPad *tee_upstream_of(GstPad *pad)
{
    GstPad *at = gst_object_ref(pad);
    for (int hop = 0; hop < MAX_HOPS; hop++) {
        GstPad *peer = gst_pad_get_peer(at);
        gst_object_unref(at);
        GstElement *e = peer ? gst_pad_get_parent_element(peer) : NULL;
        if (peer)
            gst_object_unref(peer);
        if (!e)
            return NULL;
        GstPad *next = NULL;
        GST_OBJECT_LOCK(e);
        gboolean tee = is_tee(e);
        if ((tee || (e->numsinkpads == 1 && e->numsrcpads == 1)) && e->sinkpads)
            next = gst_object_ref(GST_PAD(e->sinkpads->data));
        GST_OBJECT_UNLOCK(e);
        gst_object_unref(e);
        if (!next || tee)
            return next;
        at = next;
    }
    gst_object_unref(at);
    return NULL;
}

/* Runs the tee's own answer first, then adds ours. A tee answers FALSE, and clears what it
 * had gathered, when any branch answers nothing (a fakesink, say); upstream then takes that
 * as "no preference" and allocates system memory: so we answer TRUE with our allocator then. */
static GstPadProbeReturn offer_allocator(GstPad *pad, GstPadProbeInfo *info, gpointer data)
{
    OfferProbe *o = data;
    GstQuery *q = GST_PAD_PROBE_INFO_QUERY(info);
    if (!q || GST_QUERY_TYPE(q) != GST_QUERY_ALLOCATION || !gst_query_is_writable(q))
        return GST_PAD_PROBE_OK;
    GstPadQueryFunction tee_query = GST_PAD_QUERYFUNC(pad);
    GstObject *tee = gst_pad_get_parent(pad);
    if (!tee_query || !tee) {
        gst_clear_object(&tee);
        return GST_PAD_PROBE_OK;
    }
    /* Our sink makes its allocator when its branch is asked, inside the tee's answer. */
    gboolean answered = tee_query(pad, tee, q);
    gst_object_unref(tee);
    GstAllocator *ours = o->get(o->sink);
    if (!ours) /* our branch was not asked, or failed: the tee's answer stands */
        return answered ? GST_PAD_PROBE_HANDLED : GST_PAD_PROBE_DROP;
    if (!answered)
        GST_DEBUG_OBJECT(o->sink, "a branch of the tee answered no ALLOCATION query");
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
        GST_DEBUG_OBJECT(o->sink, "offered our allocator upstream of %" GST_PTR_FORMAT, pad);
    gst_clear_object(&theirs);
    gst_object_unref(ours);
    return GST_PAD_PROBE_HANDLED; /* answered: TRUE */
}

static void offer_destroy(gpointer data)
{
    OfferProbe *o = data;
    gst_object_unref(o->sink);
    g_free(o);
}

VsgTeeOffer *vsg_tee_offer_new(GstElement *sink, VsgAllocatorGetter get)
{
    GstPad *sinkpad = gst_element_get_static_pad(sink, "sink");
    GstPad *tee_pad = sinkpad ? tee_upstream_of(sinkpad) : NULL;
    if (sinkpad)
        gst_object_unref(sinkpad);
    if (!tee_pad)
        return NULL;
    OfferProbe *o = g_new0(OfferProbe, 1);
    o->sink = gst_object_ref(sink);
    o->get = get;
    VsgTeeOffer *handle = g_new0(VsgTeeOffer, 1);
    handle->tee_pad = tee_pad;
    handle->probe = gst_pad_add_probe(tee_pad, GST_PAD_PROBE_TYPE_QUERY_DOWNSTREAM | GST_PAD_PROBE_TYPE_PUSH,
                                      offer_allocator, o, offer_destroy);
    GST_INFO_OBJECT(sink, "behind a tee: offering our allocator at %" GST_PTR_FORMAT, tee_pad);
    return handle;
}

void vsg_tee_offer_free(VsgTeeOffer *offer)
{
    if (!offer)
        return;
    gst_pad_remove_probe(offer->tee_pad, offer->probe);
    gst_object_unref(offer->tee_pad);
    g_free(offer);
}
