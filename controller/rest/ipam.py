"""/v1/networks/{name}/ipam and /v1/hosts/{host}/ipam: the cluster-wide IPAM's claims
(cluster/ipam.py, docs/docker.md "Addresses"): the weft Docker plugin of each host
claims blocks of a network's subnet and single addresses (``docker run --ip``) here,
and gives them back.  These writes change no flow, so no switch is resynced."""
from __future__ import annotations

from fastapi import APIRouter, Depends, Path, Query

from controller.rest.deps import CoreDep, writer
from controller.rest.schemas import HOST_NAME, AddressClaimIn, BlockClaimIn
from controller.store.codec import claim_doc

router = APIRouter()


@router.get("/v1/networks/{name}/ipam")
def list_claims(core: CoreDep, name: str = Path(max_length=64),
                host: str | None = Query(None, max_length=63,
                                         description="only this host's")) -> dict:
    return {"network": name,
            "claims": [claim_doc(c) for c in core.store.ipam_claims(name, host)]}


@router.post("/v1/networks/{name}/ipam/blocks", status_code=201,
             dependencies=[Depends(writer)])
def claim_block(body: BlockClaimIn, core: CoreDep, name: str = Path(max_length=64)) -> dict:
    """A free block for ``host``; ``skip``: address claims inside it (not to hand out)."""
    c, skip = core.store.claim_block(name, body.host, body.subnet, body.prefix, body.within)
    return {**claim_doc(c), "skip": list(skip)}


@router.delete("/v1/networks/{name}/ipam/blocks", dependencies=[Depends(writer)])
def release_block(core: CoreDep, name: str = Path(max_length=64),
                  cidr: str = Query(max_length=18, description="the block"),
                  host: str = Query(pattern=HOST_NAME, max_length=63,
                                    description="the host holding it")) -> dict:
    core.store.release_block(name, cidr, host)
    return {"network": name, "released": cidr}


@router.post("/v1/networks/{name}/ipam/addresses", status_code=201,
             dependencies=[Depends(writer)])
def claim_address(body: AddressClaimIn, core: CoreDep,
                  name: str = Path(max_length=64)) -> dict:
    """The claim giving ``address`` to ``host`` (its own block, or an address claim);
    409 naming the host that holds it."""
    return claim_doc(core.store.claim_address(name, body.host, body.address, body.subnet))


@router.delete("/v1/networks/{name}/ipam/addresses", dependencies=[Depends(writer)])
def release_address(core: CoreDep, name: str = Path(max_length=64),
                    address: str = Query(max_length=15, description="the address"),
                    host: str = Query(pattern=HOST_NAME, max_length=63,
                                      description="the host holding it")) -> dict:
    core.store.release_address(name, address, host)
    return {"network": name, "released": address}


@router.delete("/v1/hosts/{host}/ipam", dependencies=[Depends(writer)])
def release_host(core: CoreDep, host: str = Path(pattern=HOST_NAME, max_length=63)) -> dict:
    """Every claim of a host gone for good (its containers with it)."""
    return {"host": host, "released": core.store.release_host(host)}
